"""Exhaustive search over *all* valid schedules of the BPTT machine model (tests only).

A state is (next step to backpropagate, stored hidden states, stored internal states, cursor).
Moves: forward step p+1 from any available h_p (cursor, a stored state, h_0) - plain, storing
its hidden state, storing its internal state, or (for p+1 = next) into the core followed by its
backward -, backward of ``next`` from a stored internal state, and dropping stored states.
Dijkstra on the number of forward operations finds the cheapest schedule, whatever its shape,
so it checks the DP's claim of optimality without assuming divide and conquer.
Memory is charged as the simulator does (h_0 counted or not; internal alpha, or beta while its
input is held) and must never exceed ``m``.
"""

import heapq


def optimal_cost(t, m, *, hidden=True, internal=False, alpha=1, beta=None, count_initial=True):
    beta = alpha if beta is None else beta

    def usage(H, I):
        u = (1 if count_initial else 0) + len(H)
        for i in I:
            u += beta if (i - 1 == 0 or (i - 1) in H or (i - 1) in I) else alpha
        return u

    start = (t, frozenset(), frozenset(), 0)
    dist = {start: 0}
    heap = [(0, 0, start)]
    tick = 0
    while heap:
        d, _, s = heapq.heappop(heap)
        if dist.get(s, None) != d:
            continue
        nb, H, I, cur = s
        if nb == 0:
            return d
        # states beyond the next backward are useless: drop them for free (normalisation)
        moves = []
        if nb in I:  # backward from a stored internal state, then it is freed
            moves.append((0, (nb - 1, H, I - {nb}, None)))
        avail = {0} | set(H) | set(I) | ({cur} if cur is not None else set())
        for p in avail:
            i = p + 1
            if i > nb:
                continue
            if i == nb:  # into the core and backpropagated at once
                moves.append((1, (nb - 1, H, I, None)))
            if i < nb:
                moves.append((1, (nb, H, I, i)))
                if hidden and i not in H:
                    H2 = H | {i}
                    if usage(H2, I) <= m:
                        moves.append((1, (nb, H2, I, i)))
            if internal and i not in I:
                I2 = I | {i}
                if usage(H, I2) <= m:
                    moves.append((1, (nb, H, I2, i)))
        for j in H:
            moves.append((0, (nb, H - {j}, I, cur)))
        for j in I:
            if j != nb:
                moves.append((0, (nb, H, I - {j}, cur)))
        for c, (nb2, H2, I2, cur2) in moves:
            H2 = frozenset(x for x in H2 if x < nb2)
            I2 = frozenset(x for x in I2 if x <= nb2)
            if cur2 is not None and cur2 > nb2:
                cur2 = None
            s2 = (nb2, H2, I2, cur2)
            d2 = d + c
            if d2 < dist.get(s2, float("inf")):
                dist[s2] = d2
                tick += 1
                heapq.heappush(heap, (d2, tick, s2))
    return float("inf")

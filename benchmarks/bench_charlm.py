"""A character-level language model's training loop: membptt against torch.utils.checkpoint.

Issue 18's user story, written as a user writes it: ``Embedding(96, 32) -> nn.LSTM(32, 128)
-> Linear(128, 96)``, a cross-entropy on every step's next character, ``T = 200``, batch 16,
float32, Adam, one thread. Each *iteration* is ``zero_grad``, forward, backward and the optimizer
step, on windows of real text (the bytes of a few Python standard-library files, printable ASCII
mapped to 95 symbols and everything else to a 96th; no download). The embedding runs outside
the recurrence in every method, as a user writes it: ``xe = emb(tokens)``, and the recurrence
gets ``xe`` (which requires grad) and the targets.

Methods, each on its own copy of one initial model with its own Adam, in one process,
interleaved round by round (per round: the median of ``--repeats`` iterations):

* ``fused full``: ``out, _ = lstm(xe)`` (one fused call, oneDNN), head and loss on all outputs;
* ``stepped``: plain autograd BPTT through an ``nn.LSTMCell`` loop on the module's own
  parameters, the head on the stacked outputs (the issue's "plain stepped BPTT", 43 ms per
  iteration there);
* ``ckpt K`` / ``ckpt-nr K``: ``torch.utils.checkpoint`` (reentrant / non-reentrant) over ``K``
  balanced chunks, each chunk one fused ``lstm`` call with the head and the chunk's summed loss
  inside (``xe``'s slice, the targets' slice and the state are the checkpointed function's
  arguments);
* ``membptt @K``: ``membptt.bptt(FusedRNNStep(lstm, head, loss), state0, (xe, y), plan)`` with
  ``plan = membptt.plan("msm", T, memory=M_K, costs=probed)`` and ``M_K`` the measured peak of
  ``ckpt K``'s iteration less the caller's tensors (below); the planner is membptt's choice
  (printed). The probe runs once, untimed, and its cost model serves every budget.

Memory: the peak of live tensor bytes (``LiveBytesTracker``) of zero_grad + forward + backward,
above what is live before it (parameters, Adam's moments, the data). ``xe`` and its gradient
(the embedding's output and what flows into it) are tensors every method holds outside the
recurrence; a membptt budget covers the recurrence only, so ``M_K`` is ``ckpt K``'s peak minus
``2 * xe.nbytes``, and membptt's whole-iteration peak is then compared with ``ckpt K``'s.
Gradients: before any training, every method's gradients from the same parameters and batch
against ``fused full``'s (float32; printed as the largest relative error).

    .venv/bin/python benchmarks/bench_charlm.py                 # 7 rounds of 5 iterations
    .venv/bin/python benchmarks/bench_charlm.py --ks 7,14 --rounds 9 --out results/peers/charlm_train_cpu.csv
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import platform
import statistics
import sys
import sysconfig
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import membptt
from membptt.measure.memory import tracked_peak
from membptt.measure.methods import balanced_segments
from membptt.measure.results import atomic_write_text
from membptt.models import FusedRNNStep

CORPUS = ("argparse.py", "textwrap.py", "string.py", "functools.py", "csv.py", "difflib.py")
VOCAB = 96


def corpus_tokens() -> torch.Tensor:
    """Stdlib source bytes as ``VOCAB`` symbols: printable ASCII 32..126 -> 0..94, else 95."""
    base = Path(sysconfig.get_paths()["stdlib"])
    data = b"".join((base / f).read_bytes() for f in CORPUS if (base / f).is_file())
    if len(data) < 10_000:
        raise RuntimeError(f"too little corpus text found under {base} ({len(data)} bytes)")
    b = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    return torch.where((b >= 32) & (b <= 126), b - 32, torch.full_like(b, VOCAB - 1))


class CharLM(nn.Module):
    def __init__(self, embed: int, hidden: int):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, embed)
        self.lstm = nn.LSTM(embed, hidden)
        self.head = nn.Linear(hidden, VOCAB)


def scaled_sum_loss(scale: float):
    """The mean cross-entropy per character written as a scaled *sum* over steps (what
    ``FusedRNNStep`` needs); every method uses this one."""
    def loss_fn(logits, targets):
        return F.cross_entropy(logits, targets, reduction="sum") * scale
    return loss_fn


def make_methods(model: CharLM, T: int, B: int, ks, scale: float):
    """``{name: (model, fn(tokens, targets) -> loss)}``; ``fn`` runs forward and backward."""
    loss_fn = scaled_sum_loss(scale)

    def fused(m):
        def fn(x, y):
            out, _ = m.lstm(m.emb(x))
            loss = loss_fn(m.head(out).reshape(-1, VOCAB), y.reshape(-1))
            loss.backward()
            return loss
        return fn

    def stepped(m):
        cell = nn.LSTMCell(m.lstm.input_size, m.lstm.hidden_size)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):  # the module's own
            setattr(cell, name, getattr(m.lstm, f"{name}_l0"))

        def fn(x, y):
            xe = m.emb(x)
            h = torch.zeros(B, m.lstm.hidden_size)
            c = torch.zeros_like(h)
            outs = []
            for t in range(T):
                h, c = cell(xe[t], (h, c))
                outs.append(h)
            loss = loss_fn(m.head(torch.stack(outs)).reshape(-1, VOCAB), y.reshape(-1))
            loss.backward()
            return loss
        return fn

    def ckpt(m, K, reentrant):
        bounds = balanced_segments(T, K)

        def seg(xc, yc, h, c):
            out, (h, c) = m.lstm(xc, (h, c))
            return loss_fn(m.head(out).reshape(-1, VOCAB), yc.reshape(-1)), h, c

        def fn(x, y):
            xe = m.emb(x)
            h = torch.zeros(1, B, m.lstm.hidden_size)
            c = torch.zeros_like(h)
            total, a = None, 0
            for s in bounds:
                loss, h, c = checkpoint(seg, xe[a:a + s], y[a:a + s], h, c,
                                        use_reentrant=reentrant)
                total = loss if total is None else total + loss
                a += s
            total.backward()
            return total
        return fn

    out = {"fused full": (model, fused(model)),
           "stepped": (m := copy.deepcopy(model), stepped(m))}
    for K in ks:
        for reentrant, tag in ((True, "ckpt"), (False, "ckpt-nr")):
            m = copy.deepcopy(model)
            out[f"{tag} {K}"] = (m, ckpt(m, K, reentrant))
    return out


def membptt_method(m: CharLM, B: int, plan, scale: float):
    """``fn(tokens, targets)``: ``membptt.bptt`` of the model's LSTM and head under ``plan``."""
    step = FusedRNNStep(m.lstm, m.head, scaled_sum_loss(scale))
    s0 = step.initial_state(B)

    def fn(x, y):
        loss = membptt.bptt(step, s0, (m.emb(x), y), plan)
        loss.backward()
        return loss
    return fn


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq-len", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--embed", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ks", type=lambda s: [int(k) for k in s.split(",")], default=[7, 14])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=5, help="iterations per method per round")
    ap.add_argument("--probe-repeats", type=int, default=5)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--out", type=Path, default=None, help="CSV of the results (atomic write)")
    args = ap.parse_args(argv)
    for name in ("seq_len", "batch", "embed", "hidden", "threads", "rounds", "repeats",
                 "probe_repeats"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    T, B = args.seq_len, args.batch
    bad = [k for k in args.ks if not 1 <= k <= T]
    if bad:
        ap.error(f"--ks must be segment counts from 1 to --seq-len {T}, got {bad}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    text = corpus_tokens()
    gen = torch.Generator().manual_seed(1)

    def batch():
        s = torch.randint(0, len(text) - T - 1, (B,), generator=gen)
        w = torch.stack([text[i:i + T + 1] for i in s.tolist()], 1)  # (T + 1, B)
        return w[:-1].contiguous(), w[1:].contiguous()

    scale = 1.0 / (T * B)  # the mean cross-entropy per character, written as a scaled sum
    model = CharLM(args.embed, args.hidden)
    methods = make_methods(model, T, B, args.ks, scale)

    def peak(m, fn, x, y):
        m.zero_grad(set_to_none=True)
        fn(x, y)  # warm
        m.zero_grad(set_to_none=True)
        p, _, _ = tracked_peak(lambda: fn(x, y))
        return p

    x0, y0 = batch()
    xe_bytes = x0.numel() * args.embed * 4
    peaks = {name: peak(m, fn, x0, y0) for name, (m, fn) in methods.items()}

    # the probe: once, untimed, on the membptt step (its own copy of the model)
    probe_model = copy.deepcopy(model)
    pstep = FusedRNNStep(probe_model.lstm, probe_model.head)
    ps0 = pstep.initial_state(B)
    t0 = time.perf_counter()
    with torch.no_grad():
        xe0 = probe_model.emb(x0)
    costs = membptt.probe(pstep, ps0, (xe0, y0), repeats=args.probe_repeats)
    probe_s = time.perf_counter() - t0
    plans = {}
    for K in args.ks:
        budget = peaks[f"ckpt {K}"] - 2 * xe_bytes
        plan = membptt.plan("msm", T, memory=f"{budget}B", costs=costs)
        m = copy.deepcopy(model)
        fn = membptt_method(m, B, plan, scale)
        methods[f"membptt @{K}"] = (m, fn)
        plans[f"membptt @{K}"] = (plan, budget)
        peaks[f"membptt @{K}"] = peak(m, fn, x0, y0)

    # gradients from the same parameters and batch, against fused full BPTT
    ref_m, ref_fn = methods["fused full"]
    ref_m.zero_grad(set_to_none=True)
    ref_fn(x0, y0)
    ref = [p.grad.clone() for p in ref_m.parameters()]
    errors = {}
    for name, (m, fn) in methods.items():
        m.load_state_dict(ref_m.state_dict())
        m.zero_grad(set_to_none=True)
        fn(x0, y0)
        errors[name] = max(float((p.grad - r).abs().max() / r.abs().max().clamp_min(1e-30))
                           for p, r in zip(m.parameters(), ref))
    opts = {name: torch.optim.Adam(m.parameters(), lr=args.lr) for name, (m, _) in
            methods.items()}
    for name, (m, fn) in methods.items():  # Adam's moments exist before timing
        m.zero_grad(set_to_none=True)
        fn(x0, y0)
        opts[name].step()

    names = list(methods)
    samples = {n: [] for n in names}
    losses = {n: [] for n in names}
    t_start = time.time()
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        data = [batch() for _ in range(args.repeats)]
        for n in order:
            m, fn = methods[n]
            ts = []
            for x, y in data:
                t = time.perf_counter()
                m.zero_grad(set_to_none=True)
                loss = fn(x, y)
                opts[n].step()
                ts.append(time.perf_counter() - t)
                losses[n].append(loss.item())
            samples[n].append(statistics.median(ts))
        print(f"[charlm] round {r + 1}/{args.rounds} done ({time.time() - t_start:.0f} s)",
              file=sys.stderr, flush=True)

    med = {n: statistics.median(samples[n]) for n in names}

    def per_round(a, b):
        return statistics.median(x / y for x, y in zip(samples[a], samples[b]))

    buf = io.StringIO()
    pr = lambda *a: print(*a, file=buf)  # noqa: E731
    pr(f"char-LM training loop: Embedding({VOCAB}, {args.embed}) -> LSTM({args.embed}, "
       f"{args.hidden}) -> Linear({args.hidden}, {VOCAB}), T = {T}, batch {B}, float32, Adam, "
       f"{args.threads} thread(s), torch {torch.__version__}, {platform.machine()}; "
       f"{args.rounds} rounds x {args.repeats} iterations, per-round medians")
    pr(f"probe: {probe_s:.1f} s (once, untimed); xe (embedding output) {xe_bytes} B")
    pr(f"{'method':<14} {'ms/iter':>8} {'x fused':>8} {'x stepped':>9} {'peak MiB':>9} "
       f"{'grad err':>9} {'loss (last rounds)':>18}")
    for n in names:
        tail = losses[n][-args.repeats:]
        pr(f"{n:<14} {1e3 * med[n]:8.2f} {per_round(n, 'fused full'):8.3f} "
           f"{per_round(n, 'stepped'):9.3f} {peaks[n] / 2**20:9.3f} {errors[n]:9.1e} "
           f"{statistics.mean(tail):18.4f}")
    rows = []
    for K in args.ks:
        mp, (plan, budget) = f"membptt @{K}", plans[f"membptt @{K}"]
        for peer in (f"ckpt {K}", f"ckpt-nr {K}"):
            ratio = per_round(mp, peer)
            pr(f"  K={K}: membptt / {peer}: {ratio:.3f} per round ({med[mp] / med[peer]:.3f} "
               f"of medians); peak {peaks[mp] / 2**20:.3f} vs {peaks[peer] / 2**20:.3f} MiB")
        fastest = min((f"ckpt {K}", f"ckpt-nr {K}"), key=lambda p: med[p])
        ratio = per_round(mp, fastest)
        inside = peaks[mp] <= peaks[f"ckpt {K}"]
        pr(f"  K={K}: plan {plan.planner} ({plan.shape}), predicted "
           f"{plan.predicted_cost:.4g} s, budget {budget} B; against the faster checkpoint "
           f"({fastest}) {ratio:.3f}: {'MET' if ratio <= 1.0 else 'NOT MET'} (target <= 1.00), "
           f"peak {'inside' if inside else 'ABOVE'} ckpt {K}'s")
        rows.append((K, plan, budget, fastest, ratio, inside))
    text_out = buf.getvalue()
    print(text_out, end="")
    if args.out is not None:
        sio = io.StringIO()
        w = csv.writer(sio)
        w.writerow(["method", "seq_len", "batch", "embed", "hidden", "threads", "rounds",
                    "repeats", "time_median_s", "time_samples_s", "ratio_fused_full",
                    "peak_bytes", "grad_error", "params", "torch", "started"])
        started = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t_start))
        for n in names:
            params = ""
            if n in plans:
                plan, budget = plans[n]
                params = (f"planner={plan.planner} shape={plan.shape.replace(' ', '_')} "
                          f"budget_bytes={budget} "
                          f"predicted_s={plan.predicted_cost:.6g}")
            w.writerow([n, T, B, args.embed, args.hidden, args.threads, args.rounds,
                        args.repeats, f"{med[n]:.6g}",
                        " ".join(f"{s:.6g}" for s in samples[n]),
                        f"{per_round(n, 'fused full'):.4f}", peaks[n], f"{errors[n]:.3g}",
                        params, torch.__version__, started])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, sio.getvalue())
        atomic_write_text(args.out.with_suffix(".log"), text_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

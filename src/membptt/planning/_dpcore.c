/* Exact BPTT-HSM / ISM / MSM dynamic program (Gruslys et al. 2016), compiled core.
 *
 * Loaded with ctypes by membptt/planning/dp.py, which documents the recursion. Arrays are
 * (M+1) x (T+1), indexed [m * (T+1) + t] (one column per memory size, contiguous in t).
 *
 * Exactness. For a cell (t, m) each push kind minimises Q(y) = A(y) + B(t - y) over a range of
 * y, where A(y) = run(left) [+ g] + C(left, m) and B(z) = C(z, m - size). With dA, dB the least
 * increments of the two columns over the ranges involved (kept as suffix minima while the table
 * is built), A(a) + B(t - b) + (b - a) min(dA, dB) is a lower bound of Q on [a, b], whatever the
 * shape of the columns. A depth-first search (left half first) prunes every interval whose bound cannot beat
 * the best value found so far (ties lose: earlier candidates win them) or exceeds an upper bound
 * U known to be >= the optimum (U comes from re-evaluating the previous row's choice). Nothing
 * that could be optimal is pruned, so the result equals the full scan, tie-break included.
 */
#include <math.h>
#include <stdint.h>

#define END 0
#define HIDDEN 1
#define INTERNAL 2
#define LEAF 8

typedef struct {
    long T1; /* T + 1 */
    double fixed, per, g;
    const double *C;
    const double *smin; /* smin[m][s] = min of the increments C(s'+1, m) - C(s', m), s' >= s */
    int reference;
    double eps; /* 0 for integer costs (all sums exact); a relative margin otherwise */
    long evals;
    long work; /* intervals searched + cells + suffix-minimum updates (evaluations apart) */
} ctx_t;

static inline double run_cost(const ctx_t *x, long k) { return k > 0 ? x->fixed + (double)k * x->per : 0.0; }

/* Q for a push of kind `shift` (0 hidden, 1 internal) at y in a cell (t, m) with memory size. */
static inline double qval(const ctx_t *x, long t, long m, long size, int shift, long y) {
    long left = y - shift;
    double a = run_cost(x, left) + (shift ? x->g : 0.0) + x->C[m * x->T1 + left];
    return a + x->C[(m - size) * x->T1 + (t - y)];
}

/* Lower bound of Q on [a, b]. A(y) >= A(a) + (y - a) dA and B(t - y) >= B(t - b) + (b - y) dB,
   where dA, dB are the least increments of the two columns over the ranges involved (suffix
   minima: valid, if weaker, bounds), so Q(y) >= A(a) + B(t - b) + (b - a) min(dA, dB). */
static inline double lower_bound(const ctx_t *x, long t, long m, long size, int shift, long a,
                                 long b) {
    long la = a - shift;
    double lb = run_cost(x, la) + (shift ? x->g : 0.0) + x->C[m * x->T1 + la] +
                x->C[(m - size) * x->T1 + (t - b)];
    if (b > a) {
        double dA = x->per + x->smin[m * x->T1 + la];
        double dB = x->smin[(m - size) * x->T1 + (t - b)];
        lb += (double)(b - a) * (dA < dB ? dA : dB);
    }
    return lb;
}

/* Minimise over y in [lo, hi]; updates *best / *by / *bk with strict improvements only. */
static void search(ctx_t *x, long t, long m, long size, int shift, int kind, long lo, long hi,
                   double U, double *best, long *by, int *bk) {
    int bounded = !x->reference;
    long stack_a[128], stack_b[128];
    int sp = 0;
    stack_a[sp] = lo; stack_b[sp] = hi; sp++;
    while (sp > 0) {
        sp--;
        long a = stack_a[sp], b = stack_b[sp];
        x->work++;
        if (bounded) {
            double lb = lower_bound(x, t, m, size, shift, a, b);
            /* a relative margin keeps the pruning conservative under floating-point rounding
               (exact for integer costs; measured costs are floats) */
            lb -= x->eps * (fabs(lb) + 1.0);
            if (lb > U || lb >= *best) continue;
        }
        if (b - a < LEAF || !bounded) {
            for (long y = a; y <= b; y++) {
                double q = qval(x, t, m, size, shift, y);
                x->evals++;
                if (q < *best) { *best = q; *by = y; *bk = kind; }
            }
            continue;
        }
        long mid = a + (b - a) / 2;
        /* push right first so that the left half is searched first */
        stack_a[sp] = mid + 1; stack_b[sp] = b; sp++;
        stack_a[sp] = a; stack_b[sp] = mid; sp++;
    }
}

/* Version of the interface below (checked by dp.py, so that a stale build is not called with
   the wrong arguments). */
long membptt_dp_version(void) { return 3; }

/* Fills counts[0] with the number of Q evaluations and counts[1] with the work (Q evaluations
   + search intervals + cells + suffix-minimum updates, what the running time is made of). Returns 0, or -1 when
   the work exceeded max_work > 0 before the table was complete (the table is then incomplete
   and must not be used). cap_unit: see Family.cap (1 + cap_unit * (t - 1)). */
long membptt_dp_solve(long T, long M, double fixed, double per, double g, int hidden,
                      int internal, long alpha, long beta, long cap_unit, int reference,
                      double eps, long max_work, long *counts,
                      double *C, int8_t *kind, int32_t *ych, double *smin) {
    ctx_t x = {T + 1, fixed, per, g, C, smin, reference, eps, 0, 0};
    long T1 = T + 1;
    for (long m = 0; m <= M; m++) {
        C[m * T1] = 0.0; kind[m * T1] = END; ych[m * T1] = 0;
        for (long t = 0; t <= T; t++) smin[m * T1 + t] = INFINITY;
        for (long t = 1; t <= T; t++) {
            long i = m * T1 + t;
            if (m == 0) { C[i] = INFINITY; kind[i] = END; ych[i] = 0; continue; }
            long cap = 1 + cap_unit * (t - 1);
            if (m > cap) { /* more memory changes nothing: copy the row's value at cap */
                long j = cap * T1 + t;
                C[i] = C[j]; kind[i] = kind[j]; ych[i] = ych[j];
            } else if (t == 1) {
                C[i] = g; kind[i] = END; ych[i] = 1;
            } else {
                double q_end = run_cost(&x, t - 1) + g + C[m * T1 + t - 1];
                double U = q_end;
                /* warm start: re-evaluate the choices of the neighbouring cells (t-1, m) and
                   (t, m-1), and their neighbours in y, as upper bounds of the optimum */
                if (internal && m - beta >= 1) {
                    double q = g + C[(m - beta) * T1 + t - 1]; if (q < U) U = q;
                }
                for (int nb = 0; nb < 2; nb++) {
                    long j = nb == 0 ? i - 1 : (m >= 2 ? i - T1 : -1);
                    if (j < 0) continue;
                    int pk = kind[j];
                    for (long d = -1; d <= 1; d++) {
                        long y = (long)ych[j] + d;
                        if (pk == HIDDEN && hidden && m - 1 >= 1 && y >= 1 && y <= t - 1) {
                            double q = qval(&x, t, m, 1, 0, y); if (q < U) U = q;
                        } else if (pk == INTERNAL && internal && y >= 2 && y <= t - 1 && m - alpha >= 1) {
                            double q = qval(&x, t, m, alpha, 1, y); if (q < U) U = q;
                        }
                    }
                }
                /* every step needs one forward with its graph: no plan beats t * g */
                double floor_cost = (double)t * g;
                double best = INFINITY; long by = t; int bk = END;
                if (hidden && m - 1 >= 1 && U > floor_cost)
                    search(&x, t, m, 1, 0, HIDDEN, 1, t - 1, U, &best, &by, &bk);
                if (internal && m - beta >= 1) {
                    double q = g + C[(m - beta) * T1 + t - 1];
                    x.evals++;
                    if (q < best) { best = q; by = 1; bk = INTERNAL; }
                }
                if (internal && t >= 3 && m - alpha >= 1 && best > floor_cost)
                    search(&x, t, m, alpha, 1, INTERNAL, 2, t - 1, U, &best, &by, &bk);
                if (q_end < best) { best = q_end; by = t; bk = END; }
                C[i] = best; kind[i] = (int8_t)bk; ych[i] = (int32_t)by;
            }
            /* suffix minima of the increments, updated for the new increment at t - 1 */
            if (m >= 1) {
                double d = C[i] - C[i - 1];
                long s = t - 1;
                for (; s >= 0 && smin[m * T1 + s] > d; s--) smin[m * T1 + s] = d;
                x.work += t - s;
            }
            if (max_work > 0 && x.evals + x.work > max_work) {
                counts[0] = x.evals; counts[1] = x.evals + x.work;
                return -1;
            }
        }
    }
    counts[0] = x.evals; counts[1] = x.evals + x.work;
    return 0;
}

/* BPTT-HSM with fused chains of any length (membptt/planning/chains.py documents the
 * recursion; this is its `solve`, the same sums in the same order, so the tables equal the
 * numpy version's bit for bit, ties included).
 *
 * C, kind, arg: (T+1) x (M+1), indexed [t * (M+1) + m], row 0 filled by the caller (C = 0,
 * kind = -1, arg = 0) and rows t >= 1 written here; run: T+1 costs of graph-free runs;
 * chain: lmax+1 costs (inf where impossible); okc: (lmax+1) x M, whether a chain of L fits
 * with m = 1..M slots (okc[L * M + m - 1]); m_all: columns of row t past m_all + t - 1 are
 * copied (saturation, exact); best, barg: scratch of M doubles and M ints. Returns 0. */
long membptt_chain_solve(long T, long M, long lmax, long m_all, int saturate,
                         const double *run, const double *chain, const int8_t *okc,
                         double *C, int8_t *kind, int32_t *arg,
                         double *best, int32_t *barg) {
    long M1 = M + 1;
    for (long t = 1; t <= T; t++) {
        long Mt = saturate ? (m_all + t - 1 < M ? m_all + t - 1 : M) : M;
        double *Ct = C + t * M1;
        int8_t *kt = kind + t * M1;
        int32_t *at = arg + t * M1;
        for (long j = 0; j < Mt; j++) { best[j] = INFINITY; barg[j] = t >= 2 ? 1 : 0; }
        /* hidden pushes, y ascending: run(y) + C(t - y, m - 1) + C(y, m); strict < keeps the
           first minimum (the smallest y), as numpy's argmin */
        for (long y = 1; y <= t - 1; y++) {
            const double *a = C + (t - y) * M1;  /* column m - 1 at index j (m = j + 1) */
            const double *b = C + y * M1 + 1;    /* column m at index j */
            double r = run[y];
            for (long j = 0; j < Mt; j++) {
                double q = r + a[j];
                q += b[j];
                if (q < best[j]) { best[j] = q; barg[j] = (int32_t)y; }
            }
        }
        for (long j = 0; j < Mt; j++) kt[j + 1] = isfinite(best[j]) ? 0 : -1;
        /* chains, longest first: run(t - L) + chain(L) + C(t - L, m) where it fits; a chain
           replaces the push only when strictly cheaper (ties: push first, then longest L) */
        long lt = lmax < t ? lmax : t;
        for (long L = lt; L >= 1; L--) {
            if (!isfinite(chain[L])) continue;
            const double *c = C + (t - L) * M1 + 1;
            const int8_t *ok = okc + L * M;
            double r = run[t - L] + chain[L];
            for (long j = 0; j < Mt; j++) {
                if (!ok[j]) continue;
                double q = r + c[j];
                if (q < best[j]) { best[j] = q; barg[j] = (int32_t)L; kt[j + 1] = 1; }
            }
        }
        for (long j = 0; j < Mt; j++) { Ct[j + 1] = best[j]; at[j + 1] = barg[j]; }
        for (long j = Mt; j < M; j++) {
            Ct[j + 1] = best[Mt - 1]; kt[j + 1] = kt[Mt]; at[j + 1] = barg[Mt - 1];
        }
    }
    return 0;
}

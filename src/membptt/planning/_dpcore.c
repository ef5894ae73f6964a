/* Exact BPTT-HSM / ISM / MSM dynamic program (Gruslys et al. 2016), compiled core.
 *
 * Loaded with ctypes by membptt/planning/dp.py, which documents the recursion. Arrays are
 * (M+1) x (T+1), indexed [m * (T+1) + t] (one column per memory size, contiguous in t).
 *
 * Exactness. For a cell (t, m) each push kind minimises Q(y) = A(y) + B(t - y) over a range of
 * y, where A(y) = run(left) [+ g] + C(left, m) and B(z) = C(z, m - size). When the table columns
 * used are nondecreasing in t (checked exactly, per column, as the table is built), A is
 * nondecreasing and B(t - y) nonincreasing in y, so A(a) + B(t - b) is a lower bound of Q on
 * [a, b]. A depth-first search (left half first) prunes every interval whose bound cannot beat
 * the best value found so far (ties lose: earlier candidates win them) or exceeds an upper bound
 * U known to be >= the optimum (U comes from re-evaluating the previous row's choice). Nothing
 * that could be optimal is pruned, so the result equals the full scan, tie-break included.
 * Where a column is not monotone the bound is not used (full scan of that range).
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
    const int64_t *mono; /* mono[m] = largest t' with column m nondecreasing on [0, t'] */
    int reference;
    long evals;
} ctx_t;

static inline double run_cost(const ctx_t *x, long k) { return k > 0 ? x->fixed + (double)k * x->per : 0.0; }

/* Q for a push of kind `shift` (0 hidden, 1 internal) at y in a cell (t, m) with memory size. */
static inline double qval(const ctx_t *x, long t, long m, long size, int shift, long y) {
    long left = y - shift;
    double a = run_cost(x, left) + (shift ? x->g : 0.0) + x->C[m * x->T1 + left];
    return a + x->C[(m - size) * x->T1 + (t - y)];
}

/* Minimise over y in [lo, hi]; updates *best / *by / *bk with strict improvements only. */
static void search(ctx_t *x, long t, long m, long size, int shift, int kind, long lo, long hi,
                   double U, double *best, long *by, int *bk) {
    int bounded = !x->reference && x->mono[m] >= hi - shift && x->mono[m - size] >= t - lo;
    long stack_a[128], stack_b[128];
    int sp = 0;
    stack_a[sp] = lo; stack_b[sp] = hi; sp++;
    while (sp > 0) {
        sp--;
        long a = stack_a[sp], b = stack_b[sp];
        if (bounded) {
            long la = a - shift;
            double lb = run_cost(x, la) + (shift ? x->g : 0.0) + x->C[m * x->T1 + la] +
                        x->C[(m - size) * x->T1 + (t - b)];
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

/* Returns the number of Q evaluations. cap_unit: see Family.cap (1 + cap_unit * (t - 1)). */
long membptt_dp_solve(long T, long M, double fixed, double per, double g, int hidden,
                      int internal, long alpha, long beta, long cap_unit, int reference,
                      double *C, int8_t *kind, int32_t *ych, int64_t *mono) {
    ctx_t x = {T + 1, fixed, per, g, C, mono, reference, 0};
    long T1 = T + 1;
    for (long m = 0; m <= M; m++) {
        C[m * T1] = 0.0; kind[m * T1] = END; ych[m * T1] = 0;
        mono[m] = 0;
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
                /* warm start: the previous row's choice, and its y + 1, as upper bounds */
                int pk = kind[i - 1];
                long py = ych[i - 1];
                for (long d = 0; d <= 1; d++) {
                    long y = py + d;
                    if (pk == HIDDEN && hidden && m - 1 >= 1 && y >= 1 && y <= t - 1) {
                        double q = qval(&x, t, m, 1, 0, y); if (q < U) U = q;
                    } else if (pk == INTERNAL && internal && y >= 2 && y <= t - 1 && m - alpha >= 1) {
                        double q = qval(&x, t, m, alpha, 1, y); if (q < U) U = q;
                    }
                }
                double best = INFINITY; long by = t; int bk = END;
                if (hidden && m - 1 >= 1)
                    search(&x, t, m, 1, 0, HIDDEN, 1, t - 1, U, &best, &by, &bk);
                if (internal && m - beta >= 1) {
                    double q = g + C[(m - beta) * T1 + t - 1];
                    x.evals++;
                    if (q < best) { best = q; by = 1; bk = INTERNAL; }
                }
                if (internal && t >= 3 && m - alpha >= 1)
                    search(&x, t, m, alpha, 1, INTERNAL, 2, t - 1, U, &best, &by, &bk);
                if (q_end < best) { best = q_end; by = t; bk = END; }
                C[i] = best; kind[i] = (int8_t)bk; ych[i] = (int32_t)by;
            }
            if (mono[m] == t - 1 && C[i] >= C[i - 1]) mono[m] = t;
        }
    }
    return x.evals;
}

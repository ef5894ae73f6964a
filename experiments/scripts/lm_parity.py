"""Comparable performance at our scale: GRU, RevGRU, LSTM, RevLSTM byte-level language models.

    python experiments/scripts/lm_parity.py            # writes results/lm_parity.csv
    python experiments/scripts/fig_lm_parity.py        # figures/lm_parity.{png,pdf}
    snakemake lm --cores 2                             # both, from the config's lm_parity keys

The corpus needs no download: the bytes of a fixed list of Python standard-library source files
(:data:`CORPUS_FILES`, read from ``sysconfig.get_paths()["stdlib"]``, concatenated in that
order; its SHA-256 goes into every row, since it changes with the Python version). The first
90 % trains, the rest evaluates. Every model sees the same batches (random windows from one
seeded generator), starts from the same seed and trains the same number of steps with Adam and
gradient clipping; initial states are zero per window. GRU and LSTM (``membptt.models``) train
with plain autograd BPTT; RevGRU and RevLSTM with :func:`membptt.models.reversible_bptt` (their
reversible backward, which gives the same gradients as plain autograd through their
fixed-point forward). One row per evaluation: ``train_loss_nats`` is the mean training loss per
byte over the iterations since the previous row, ``eval_loss_nats`` the loss per byte on the
held-out streams, ``eval_bpc`` the same in bits per character (byte); for the reversible
models ``buffer_bits_{allocated,stored,optimal}`` are the buffer's bits per state unit per step
in the last training iteration before the row (see :class:`membptt.models.reversible.ReversibleStats`).
"""


import argparse
import hashlib
import math
import sys
import sysconfig
import time
from pathlib import Path

import pandas as pd
import torch
from pipeline_common import ROOT, provenance, start, write_csv

from membptt.execution.executor import plain_bptt
from membptt.models import GRULanguageModel, LSTMLanguageModel, make_reversible_lm, reversible_bptt
from membptt.models.reversible import ReversibleStats

CORPUS_FILES = ("argparse.py", "textwrap.py", "string.py", "functools.py",
                "collections/__init__.py", "csv.py", "json/decoder.py", "json/encoder.py",
                "difflib.py", "heapq.py", "shlex.py", "fractions.py")
MODELS = ("gru", "rev-gru", "lstm", "rev-lstm")
VOCAB = 256


def load_corpus(files=CORPUS_FILES) -> tuple[torch.Tensor, str]:
    """The concatenated bytes (uint8 tensor) and their SHA-256."""
    base = Path(sysconfig.get_paths()["stdlib"])
    data = b""
    for name in files:
        p = base / name
        if not p.is_file():
            raise FileNotFoundError(f"corpus file {name!r} not found in the stdlib at {base}")
        data += p.read_bytes()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long(), \
        hashlib.sha256(data).hexdigest()


def build(name: str, embed: int, hidden: int, max_forget: float):
    if name == "gru":
        return GRULanguageModel(embed, hidden, VOCAB, embed=True)
    if name == "lstm":
        return LSTMLanguageModel(embed, hidden, VOCAB, embed=True)
    if name in ("rev-gru", "rev-lstm"):
        return make_reversible_lm(name, embed, hidden, VOCAB, embed=True, max_forget=max_forget)
    raise ValueError(f"model must be one of {MODELS}, got {name!r}")


def train_loss(name, model, xs, ys, stats=None):
    """Summed loss of one window batch; ``backward()`` runs the model's own method."""
    state0 = model.initial_state(xs.shape[1])
    if name.startswith("rev-"):
        return reversible_bptt(model, state0, (xs, ys), stats=stats)
    return plain_bptt(model, state0, (xs, ys))[0]


@torch.no_grad()
def evaluate(model, ex, ey) -> float:
    """Mean loss per byte (nats) over the held-out streams ``ex``/``ey`` (time on dim 0)."""
    model.eval()
    h = model.initial_state(ex.shape[1])
    total = 0.0
    for t in range(ex.shape[0]):
        h, loss = model(h, (ex[t], ey[t]))
        total += float(loss)
    model.train()
    return total / ex.numel()


def windows(data, n_windows, seq_len, gen):
    off = torch.randint(0, data.numel() - seq_len - 1, (n_windows,), generator=gen)
    idx = off[None, :] + torch.arange(seq_len + 1)[:, None]
    w = data[idx]
    return w[:-1], w[1:]


def run_model(name, args, train, ex, ey):
    torch.manual_seed(args.seed)
    model = build(name, args.embed, args.hidden, args.max_forget)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed + 1)          # same batches for every model
    n_params = sum(p.numel() for p in model.parameters())
    rows, acc, n_acc = [], 0.0, 0
    stats = ReversibleStats() if name.startswith("rev-") else None
    started = time.perf_counter()

    def row(step):
        ev = evaluate(model, ex, ey)
        rows.append({"model": name, "step": step,
                     "train_loss_nats": acc / n_acc if n_acc else math.nan,
                     "eval_loss_nats": ev, "eval_bpc": ev / math.log(2), "params": n_params,
                     "elapsed_s": time.perf_counter() - started,
                     **{f"buffer_bits_{k}": stats.per_unit_step(k) if stats and stats.steps
                        else math.nan for k in ("allocated", "stored", "optimal")}})
        print(f"{name:9s} step {step:4d}  train {rows[-1]['train_loss_nats']:.4f}  "
              f"eval {ev:.4f} nats ({ev / math.log(2):.3f} bpc)  "
              f"{rows[-1]['elapsed_s']:.1f} s", flush=True)

    row(0)
    for step in range(1, args.steps + 1):
        xs, ys = windows(train, args.batch, args.seq_len, gen)
        opt.zero_grad(set_to_none=True)
        loss = train_loss(name, model, xs, ys, stats) / xs.numel()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        acc, n_acc = acc + float(loss.detach()), n_acc + 1
        if step % args.eval_every == 0 or step == args.steps:
            row(step)
            acc, n_acc = 0.0, 0
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0] or None)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--embed", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--max-forget", type=float, default=0.875)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--eval-streams", type=int, default=16)
    ap.add_argument("--eval-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "results" / "lm_parity.csv"))
    args = ap.parse_args(argv)
    models = args.models.split(",")
    for m in models:
        if m not in MODELS:
            ap.error(f"--models: {m!r} is not one of {','.join(MODELS)}")
    for k in ("steps", "seq_len", "batch", "embed", "hidden", "eval_every", "eval_streams",
              "eval_len", "threads"):
        if getattr(args, k) < 1:
            ap.error(f"--{k.replace('_', '-')} must be >= 1, got {getattr(args, k)}")
    torch.set_num_threads(args.threads)
    data, sha = load_corpus()
    cut = int(0.9 * data.numel())
    train, held = data[:cut], data[cut:]
    need = args.eval_streams * (args.eval_len + 1)
    if held.numel() < need:
        raise ValueError(f"held-out part has {held.numel()} bytes, need {need}")
    ev = held[:need].view(args.eval_streams, args.eval_len + 1).t()
    ex, ey = ev[:-1].contiguous(), ev[1:].contiguous()
    t0 = time.time()
    rows = [r for m in models for r in run_model(m, args, train, ex, ey)]
    prov = provenance()
    cmd = sys.argv if argv is None else ["experiments/scripts/lm_parity.py", *argv]
    meta = {"command": " ".join(["python", *cmd]), "hostname": prov["hostname"],
            "machine": prov["machine"], "torch_version": prov["torch_version"],
            "python_version": prov["python_version"], "git_commit": prov["git_commit"],
            "git_dirty": prov["git_dirty"],
            "timestamp": prov["timestamp"], "threads": args.threads,
            "corpus_files": " ".join(CORPUS_FILES), "corpus_bytes": data.numel(),
            "corpus_sha256": sha, "seed": args.seed, "seq_len": args.seq_len,
            "batch": args.batch, "embed": args.embed, "hidden": args.hidden, "lr": args.lr,
            "max_forget": args.max_forget, "total_wall_s": round(time.time() - t0, 1)}
    write_csv(pd.DataFrame([{**r, **meta} for r in rows]), args.out)
    print(f"wrote {args.out} ({len(rows)} rows, {meta['total_wall_s']} s)")


if __name__ == "__main__":
    if "snakemake" in globals():  # the pipeline's rule lm_parity: options from the config
        start(snakemake)  # noqa: F821
        main([*snakemake.params.args, "--out", snakemake.output.csv])  # noqa: F821
    else:
        main()

"""The engine against an earlier version of itself: speed ratios in one process, one thread.

    python benchmarks/bench_engine.py            # against sweep.py as of commit 4120dbe
    python benchmarks/bench_engine.py REV        # against sweep.py as of git revision REV

Issue 21 grew ``bnteach.sweep`` into the one MLP engine (``inits=``, ``eval_sets=``,
``to_modules()``, ghost BN, renorm, dropout, SGD and weight decay, class labels). This loads
``bnteach/sweep.py`` as it was at ``REV`` (by ``git show``) next to today's, and times the
settings both can run, interleaved, best of a few repeats after a warm-up, in one process on one
thread, and checks that both give the same final numbers. Prints a markdown table of ratios
(new / old; below 1 is faster). No timing is asserted anywhere. Needs git and the repository's
history (a shallow clone without ``REV`` cannot run it).
"""

import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bnteach import sweep
from bnteach.data import load_data

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "4120dbe"  # the last commit before the engine work of issue 21
SEEDS, REPEATS = list(range(8)), 3
CASES = {  # name -> keyword arguments both versions take
    "default view: 8 seeds x 2 models, 25 epochs, batch 64": {"epochs": 25},
    "batch 4: 8 seeds x 2 models, 2 epochs": {"epochs": 2, "batch_size": 4},
    "learning-rate sweep: 8 seeds x 7 rates x 2 models, 5 epochs": {
        "epochs": 5,
        "lrs": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
    },
}
MODELS = {"Without BN": {"norm": "none"}, "With BN": {"norm": "batch"}}


def old_sweep(rev):
    """``bnteach/sweep.py`` as of git revision ``rev``, imported as a module of its own."""
    try:
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:bnteach/sweep.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        sys.exit(f"cannot read bnteach/sweep.py at {rev!r} from git: {err}")
    path = Path(tempfile.mkdtemp()) / f"sweep_{rev}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"sweep_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timed(engine, data, kwargs):
    """(seconds, final validation losses) of one ``engine.run``."""
    kwargs = dict(kwargs)
    lrs = kwargs.pop("lrs", [0.01])
    start = time.perf_counter()
    result = engine.run(SEEDS, lrs, models=MODELS, data=data, **kwargs)
    seconds = time.perf_counter() - start
    finals = torch.tensor([h.val_loss[-1] for h in result.histories()])
    return seconds, finals


def main(rev=BEFORE):
    torch.set_num_threads(1)
    old = old_sweep(rev)
    data = load_data()
    print(f"sweep.run today against sweep.py at {rev}; torch {torch.__version__}, 1 thread, "
          f"best of {REPEATS}\n")  # fmt: skip
    print("| setting | old | new | new / old | same numbers |")
    print("|---|---|---|---|---|")
    for name, kwargs in CASES.items():
        timed(old, data, {**kwargs, "epochs": 1})  # warm-up
        timed(sweep, data, {**kwargs, "epochs": 1})
        best = {"old": float("inf"), "new": float("inf")}
        for _ in range(REPEATS):  # interleaved: a busy machine slows both alike
            t_old, f_old = timed(old, data, kwargs)
            t_new, f_new = timed(sweep, data, kwargs)
            best["old"], best["new"] = min(best["old"], t_old), min(best["new"], t_new)
        diff = (f_old - f_new).abs().max()
        same = "bitwise" if torch.equal(f_old, f_new) else f"max diff {diff:.1e}"
        print(f"| {name} | {best['old']:.3f} s | {best['new']:.3f} s | "
              f"{best['new'] / best['old']:.2f} | {same} |")  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:2])

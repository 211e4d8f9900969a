"""Notebook 05's checks of the batch-size experiments: BN at small batches (4) and LayerNorm, whose
statistics do not depend on the batch (9). Both verify that each run was really trained with
the batch size it is filed under, from the batch size its SweepResult records."""

from bnteach.exercises import kit
from bnteach.exercises.kit import MARGIN, VERDICTS, Wrong

NB = kit.notebook("05")

# ============================================================================ 4 batch size


def _check_batch_results(results, name, sizes, models):
    if not isinstance(results, dict) or not all(isinstance(k, int) for k in results):
        raise Wrong(
            f"`{name}` should be a dict {{batch size: SweepResult}}, e.g. {{2: ..., 64: ...}}."
        )
    missing = [b for b in sizes if b not in results]
    if missing:
        raise Wrong(f"`{name}` lacks the batch size(s) {missing}; use at least {list(sizes)}.")
    first = None
    for bs, r in sorted(results.items()):
        kit.sweep_result(r, f"{name}[{bs}]")
        if set(r.models) != set(models):
            raise Wrong(
                f"`{name}[{bs}]` holds the models {sorted(r.models)}, expected {sorted(models)}."
            )
        for m, norm in models.items():
            if r.models[m]["norm"] != norm:
                raise Wrong(f"In `{name}[{bs}]` the model {m!r} should have norm={norm!r}.")
        setting = (r.seeds, r.lrs, r.epochs, r.models)
        if first is None:
            first = setting
        elif setting != first:
            raise Wrong(
                f"The runs in `{name}` differ in more than the batch size (seeds, learning "
                f"rates, epochs or models): compare like with like."
            )
    for bs, r in results.items():
        # The result records the batch size it was trained with: no retraining, no tolerance.
        if r.batch_size != bs:
            raise Wrong(
                f"`{name}[{bs}]` was trained with batch_size={r.batch_size} (the SweepResult "
                f"records it), but it is filed under {bs}. Pass batch_size=bs to sweep.run "
                f"inside your loop."
            )
        if not r.finished:
            raise Wrong(
                f"`{name}[{bs}]` stopped after {r.epochs_run} of {r.epochs} epochs; let every "
                f"run finish (an on_epoch callback that returns False stops it)."
            )
    return sorted(results)


@NB.check("4", "batch size")
def check_batch_size(results, bn_minus_plain, worst, verdicts):
    """Exercise 4. ``results``: ``{batch size: sweep.run(...)}`` of the default pair for batch
    sizes including 2, 4, 64 and 256 (same seeds, lr and epochs); ``bn_minus_plain``:
    ``{batch size: mean final val accuracy of BN minus plain}``; ``worst``: the batch size
    where BN does worst compared with the plain net; ``verdicts``: ``{batch size:
    paired(BN, plain).verdict(margin=0.02)}``."""
    kit.missing(
        {
            "batch_results": results,
            "bn_minus_plain": bn_minus_plain,
            "worst_batch": worst,
            "batch_verdicts": verdicts,
        },
        "Train the pair at each batch size, fill in the tables and name the worst batch size.",
    )
    sizes = _check_batch_results(
        results, "batch_results", (2, 4, 64, 256), {"plain": "none", "BN": "batch"}
    )

    def table(sign=1):
        return {
            bs: sign
            * (kit.mean(kit.finals(results[bs], "BN")) - kit.mean(kit.finals(results[bs], "plain")))
            for bs in sizes
        }

    expected = table()
    kit.table(
        bn_minus_plain,
        expected,
        "bn_minus_plain",
        "mean final validation accuracy of BN minus plain",
        [(table(-1), "The differences have the wrong sign: BN minus plain, not plain minus BN.")],
    )
    if isinstance(worst, bool) or not isinstance(worst, int) or worst not in sizes:
        raise Wrong(f"`worst_batch` should be one of your batch sizes {sizes}, got {worst!r}.")
    truth = min(expected, key=expected.get)
    shown = ", ".join(f"{bs}: {d:+.3f}" for bs, d in expected.items())
    if worst != truth:
        raise Wrong(f"Your own numbers (BN minus plain) are {shown}: the lowest is at {truth}.")
    if not isinstance(verdicts, dict) or set(verdicts) != set(sizes):
        raise Wrong(
            f"`batch_verdicts` should be a dict with one verdict per batch size {sizes}, e.g. "
            f"{{2: 'worse', ...}} (one of {', '.join(map(repr, VERDICTS))})."
        )
    said = {
        bs: kit.check_verdict(
            verdicts[bs],
            kit.paired_finals(results[bs], "BN", "plain"),
            f"batch_verdicts[{bs}]",
            MARGIN,
        )
        for bs in sizes
    }
    bn_train = kit.mean(kit.finals(results[truth], "BN", "train_loss"))
    return (
        f"BN minus plain by batch size: {shown}. At batch size {truth} BN is worst; its final "
        f"training loss there is {bn_train:.3f} (ln 2 = 0.693 is guessing). Verdicts (margin "
        f"{MARGIN:g}): {', '.join(f'{bs}: {verdicts[bs]}' for bs in sizes)}. At batch size "
        f"{sizes[-1]}: {said[sizes[-1]]}."
    )


# ============================================================================ 9 LayerNorm


@NB.check("9", "LayerNorm at small batches")
def check_layer_norm(results, acc, verdict_at_2, more_sensitive):
    """Exercise 9. ``results``: ``{batch size: sweep.run(...)}`` of ``{"BN": norm batch, "LN":
    norm layer}`` for batch sizes including 2 and 64 (same seeds, lr, epochs); ``acc``:
    ``{(model, batch size): mean final validation accuracy}``; ``verdict_at_2``:
    ``paired(LN, BN).verdict(margin=0.02)`` at batch size 2; ``more_sensitive``: the model whose
    mean accuracy changes more across the batch sizes (largest minus smallest)."""
    kit.missing(
        {
            "ln_results": results,
            "ln_acc": acc,
            "ln_verdict_2": verdict_at_2,
            "more_sensitive": more_sensitive,
        },
        "Train BN and LN at each batch size, fill in the table and answer the two questions.",
    )
    sizes = _check_batch_results(results, "ln_results", (2, 64), {"BN": "batch", "LN": "layer"})
    keys = [(m, bs) for m in ("BN", "LN") for bs in sizes]
    expected = {(m, bs): kit.mean(kit.finals(results[bs], m)) for m, bs in keys}
    kit.table(
        acc,
        expected,
        "ln_acc",
        "mean final validation accuracy over seeds",
        [
            (
                {(m, bs): kit.mean(kit.finals(results[bs], m, "val_loss")) for m, bs in keys},
                "These are validation losses; the table is about the final validation accuracy.",
            )
        ],
    )
    said = kit.check_verdict(
        verdict_at_2, kit.paired_finals(results[2], "LN", "BN"), "ln_verdict_2", MARGIN
    )
    kit.choice(more_sensitive, ["BN", "LN"], "more_sensitive")
    ranges = {
        m: max(expected[m, bs] for bs in sizes) - min(expected[m, bs] for bs in sizes)
        for m in ("BN", "LN")
    }
    truth = max(ranges, key=ranges.get)
    if more_sensitive != truth:
        raise Wrong(
            f"Across batch sizes {sizes} BN's mean accuracy spans {ranges['BN']:.3f} and LN's "
            f"{ranges['LN']:.3f}: {truth} is more sensitive."
        )
    shown = ", ".join(
        f"{bs}: BN {expected['BN', bs]:.3f} / LN {expected['LN', bs]:.3f}" for bs in sizes
    )
    return (
        f"{shown}. At batch size 2: {said}. LayerNorm's statistics are per sample, so the "
        f"batch size does not enter them."
    )

"""Self-checks for the exercises of notebook 12 (BatchNorm and its neighbours).

- 12.1 ``zero_init(model)``: zero-initialise the right gamma of a residual MLP, so that every
  block starts as the identity.
- 12.2 ``result`` and ``verdict``: should BN's gamma and beta get weight decay? The learner's
  own runs (two models that differ only in ``decay_norm``) and the verdict they support.
- 12.3 ``make_net(p)``: a BN net with dropout of probability ``p`` placed where it does not
  shift the variance that BN sees.

Each check returns a :class:`~bnteach.exercises.kit.Feedback` as notebook 07's checks do:
"correct" restating what was measured, "wrong" naming the mistake found, or "not attempted".
A learner's exception or ``None`` is feedback, never an internal error. These exercises have
their own :func:`progress` table.
"""

import copy

import torch
from torch import nn

from bnteach.batchnorm import bn_layers
from bnteach.exercises import kit
from bnteach.exercises.kit import NotAttempted, Wrong
from bnteach.models import ResidualBlock, ResidualMLP
from bnteach.neighbours import variance_shift
from bnteach.stats import paired
from bnteach.sweep import SweepResult

__all__ = [
    "EXERCISES",
    "MARGIN",
    "check_zero_gamma",
    "check_weight_decay_on_norms",
    "check_dropout_placement",
    "progress",
    "reset",
]

NB = kit.notebook("12")
MARGIN = 0.01  # 12.2: a difference of at most one point of accuracy is "no practical difference"
VERDICTS = ("better", "worse", "equivalent", "unresolved")


# ============================================================================ 12.1 zero gamma

BLOCKS = 3


def _residual_net():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12)
        return ResidualMLP(16, 8, BLOCKS, 4, norm="batch", init="default")


def _names(model):
    """The parameter names of interest: stem BN, each block's first/last BN and Linears."""
    blocks = [f"network.{i}" for i, m in enumerate(model.network) if isinstance(m, ResidualBlock)]
    return {
        "last gamma": {f"{b}.branch.4.weight" for b in blocks},
        "first gamma": {f"{b}.branch.1.weight" for b in blocks},
        "last linear": {f"{b}.branch.3.weight" for b in blocks},
        "stem gamma": {"network.1.weight"},
        "output": {f"network.{len(model.network) - 1}.weight"},
    }


_ZERO_FAULTS = [  # (names that must all be among the zeroed ones, message)
    (
        "stem gamma",
        "You zeroed the stem's gamma (`network[1]`, the BN before the first block) too: then "
        "every sample enters the blocks as the same vector, and the net starts as a constant "
        "function. Zero only the LAST BN of each block's branch.",
    ),
    (
        "first gamma",
        "You zeroed the FIRST BN's gamma of each branch (`branch[1]`): the block is the "
        "identity at the start, but the ReLU after that BN then gets 0 and passes no gradient "
        "back, so those gammas never move and the branch stays dead. Zero the LAST BN "
        "(`branch[-1]`): its output is added to the skip connection, and its gamma gets a "
        "gradient.",
    ),
    (
        "last linear",
        "You zeroed the Linear before the last BN (`branch[3]`): BN then divides a zero input "
        "by sqrt(0 + eps), about 1/316, so the first gradients through it are hundreds of "
        "times too large (and W = 0 is the one point where BN's scale invariance breaks). "
        "Zero the BN's gamma (`branch[-1].weight`) instead.",
    ),
    (
        "output",
        "You zeroed the output layer: the logits all start at 0, but the blocks are not the "
        "identity. Zero the last BN's gamma of every block's branch (`branch[-1].weight`).",
    ),
]


def _changed(before, model):
    """The state_dict keys whose values changed; Wrong if layers were replaced or reshaped."""
    after = model.state_dict()
    if set(after) != set(before):
        gone, new = sorted(set(before) - set(after)), sorted(set(after) - set(before))
        raise Wrong(
            f"Your function replaced or removed layers (gone: {gone[:3]}, new: {new[:3]}): "
            f"keep the model as it is and change only the value of the right gamma."
        )
    reshaped = [
        k for k in before if (before[k].shape, before[k].dtype) != (after[k].shape, after[k].dtype)
    ]
    if reshaped:
        raise Wrong(
            f"Your function changed the shape or dtype of {reshaped[:3]}: gamma keeps one "
            f"value per feature; set those values to 0 (`weight.zero_()` under no_grad)."
        )
    return {k for k in before if not torch.equal(before[k], after[k])}


def _zero_init_result(zero_init):
    model = _residual_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = kit.bn_settings(model)
    out = kit.call(zero_init, model, name="zero_init")
    if out is not None and out is not model:
        raise Wrong(
            f"`zero_init` returned {type(out).__name__} other than the model it was given: "
            f"change that model in place (and return it, or nothing), so that the model "
            f"you go on to train is the initialised one."
        )
    now = kit.bn_settings(model)
    if len(now) == len(settings) and now != settings:  # (a layer replaced: _changed says so)
        raise Wrong(
            "Your function changed BN's momentum, eps or track_running_stats: initialising touches "
            "only the values of the parameters."
        )
    return model, before


def _check_trainable(model, names):
    params = dict(model.named_parameters())
    frozen = sorted(k for k in names if k not in params or not params[k].requires_grad)
    if frozen:
        raise Wrong(
            f"The zeroed gammas must still train, but {frozen[:3]} no longer do "
            f"(requires_grad=False, or no longer a Parameter): zero them in place under "
            f"torch.no_grad() (`with torch.no_grad(): bn.weight.zero_()`), so that they can "
            f"grow from 0."
        )


def _zero_gamma_feedback(model, before):
    changed = _changed(before, model)
    buffers = {k for k in changed if "running" in k or "num_batches" in k}
    if buffers:
        raise Wrong(
            "Your function changed BN's running statistics (did it run the model in training "
            "mode?): initialising touches only parameters."
        )
    if not changed:
        raise Wrong(
            "Your function changed nothing. (Zeroing beta, BN's `bias`, changes nothing: it "
            "starts at 0 already.) Set each block's last BN `weight` (gamma) to 0."
        )
    state = model.state_dict()
    zeroed = {k for k in changed if not bool(state[k].any())}
    names = _names(model)
    for part, message in _ZERO_FAULTS:
        if names[part] & zeroed:
            raise Wrong(message)
    if zeroed != names["last gamma"]:
        missing = sorted(names["last gamma"] - zeroed)
        other = sorted(changed - names["last gamma"])
        detail = f"not zeroed: {missing}" if missing else f"also changed: {other}"
        raise Wrong(
            f"Each of the {BLOCKS} blocks' last BN gamma (`branch[-1].weight`) must be 0, and "
            f"nothing else changed ({detail})."
        )
    if changed != zeroed:
        raise Wrong(f"Your function also changed {sorted(changed - zeroed)}: leave those alone.")
    _check_trainable(model, names["last gamma"])


@NB.check("12.1", "zero-init the right gamma")
def check_zero_gamma(zero_init):
    """Exercise 12.1. ``zero_init(model)``: given a ``ResidualMLP(norm="batch",
    init="default")``, set the gamma of the last BN of every block's branch to 0, in place
    (return the model or nothing)."""
    kit.missing({"zero_init": zero_init}, "Write the function.")
    model, before = _zero_init_result(zero_init)
    _zero_gamma_feedback(model, before)
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(1))
    seen = []
    hooks = [
        m.register_forward_hook(lambda mod, args, out: seen.append((args[0], out)))
        for m in model.network
        if isinstance(m, ResidualBlock)
    ]
    with torch.no_grad():
        model.train()(x)
    for h in hooks:
        h.remove()
    # every block is the identity (what the parameter checks above imply; else our bug)
    assert all(torch.equal(a, b) for a, b in seen), "a block is not the identity"
    return (
        f"Every one of the {BLOCKS} blocks' last BN gamma is 0 and nothing else changed: each "
        f"block now starts as the identity, relu(x + 0) = x (checked on a batch), while its "
        f"gamma still gets a gradient, as in Goyal et al. (2017)."
    )


# ============================================================================ 12.2 decay gamma

DECAY, SPARE = "decay gamma, beta", "spare gamma, beta"


def _check_pair(result):
    if not isinstance(result, SweepResult):
        raise Wrong(
            f"`result` should be the SweepResult returned by `sweep.run(...)`, got "
            f"{type(result).__name__}."
        )
    if set(result.models) != {DECAY, SPARE}:
        raise Wrong(
            f"`result` holds the models {sorted(result.models)}; train exactly two, named "
            f"{DECAY!r} and {SPARE!r}."
        )
    a, b = result.models[DECAY], result.models[SPARE]
    differ = sorted(k for k in a if a[k] != b[k])
    if differ != ["decay_norm"] or a["decay_norm"] is not True:
        raise Wrong(
            f"The two models must differ only in `decay_norm` (True for {DECAY!r}, False for "
            f"{SPARE!r}); yours differ in {differ or 'nothing'}."
        )
    if a["weight_decay"] <= 0 or a["norm"] not in ("batch", "ghost", "renorm"):
        raise Wrong(
            "Both models need BN (`norm: 'batch'`) and a weight decay above 0 (e.g. 1e-2): "
            "otherwise `decay_norm` changes nothing."
        )
    if len(result.seeds) < 5 or len(result.lrs) != 1:
        raise Wrong(
            f"Use one learning rate and at least 5 seeds (you have {len(result.lrs)} and "
            f"{len(result.seeds)}): one or two seeds cannot separate a one-point effect from "
            f"seed noise."
        )
    if any(d is not None for d in result.diverged_at):
        raise Wrong("Some of your runs diverged: use a smaller learning rate.")


def _why(verdict, truth):
    if {verdict, truth} == {"better", "worse"}:
        return f"the verdict is from {DECAY!r}'s side: paired(decay values, spare values)"
    if verdict in ("better", "worse"):
        return "the interval includes 0: a higher mean or more wins do not show a difference"
    if truth in ("better", "worse"):
        return "the interval excludes 0: the difference is real, even if it is small"
    if verdict == "equivalent":
        return f"'equivalent' needs the whole interval inside +/-{MARGIN:g}"
    return f"the interval lies inside +/-{MARGIN:g} and includes 0"


def _gamma_norms(result, model):
    nets = result.to_modules(model=model)
    return [sum(float(m.weight.detach().norm()) for m in bn_layers(net)) / len(bn_layers(net))
            for net in nets]  # fmt: skip


@NB.check("12.2", "weight decay on gamma and beta?")
def check_weight_decay_on_norms(result, verdict):
    """Exercise 12.2. ``result``: ``sweep.run`` of two BN models named "decay gamma, beta"
    and "spare gamma, beta" that differ only in ``decay_norm`` (True / False), with weight
    decay, one learning rate, at least 5 seeds. ``verdict``: ``paired(decay, spare)
    .verdict(margin=MARGIN)`` on the final validation accuracy ("better", "worse",
    "equivalent" or "unresolved", from the decayed model's side)."""
    kit.missing({"result": result, "verdict": verdict}, "Run the experiment and give your verdict.")
    _check_pair(result)
    kit.choice(verdict, list(VERDICTS), "verdict")
    final = {m: [h.val_acc[-1] for h in result.histories(model=m)] for m in (DECAY, SPARE)}
    p = paired(final[DECAY], final[SPARE], names=(DECAY, SPARE))
    truth = p.verdict(MARGIN)
    if verdict != truth:
        raise Wrong(
            f"`verdict` is {verdict!r}, but your own runs give {truth!r} with the margin "
            f"{MARGIN:g} ({_why(verdict, truth)}). {p.statement(MARGIN)}."
        )
    decayed, spared = (sum(_gamma_norms(result, m)) / len(result.seeds) for m in (DECAY, SPARE))
    return (
        f"Right: {p.statement(MARGIN)}. Meanwhile the gammas' norm (mean per BN layer) is "
        f"{decayed:.2f} with decay and {spared:.2f} without. Unlike a weight in front of BN, the "
        f"gamma of the BN that feeds the output layer sets the scale of the logits: decaying it "
        f"constrains the function itself, not just the step size, and whether that helps is an "
        f"empirical question, as your runs show."
    )


# ============================================================================ 12.3 dropout

FEATURES, CLASSES = 64, 10


def _call_order(model, x):
    """The leaf modules of ``model`` in the order a train-mode forward pass calls them."""
    order, hooks = [], []
    for m in model.modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(lambda mod, a, o: order.append(mod)))
    try:
        with torch.no_grad():
            out = model.train()(x)
    finally:
        for h in hooks:
            h.remove()
    return order, out


DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
            nn.FeatureAlphaDropout)  # fmt: skip
SHIFT_TOLERANCE = 0.1  # eval variance / running variance within 1 +/- this: no shift


def _dropout_net(make_net, p):
    model = kit.call(make_net, p, name="make_net")
    if model is None:
        raise NotAttempted("`make_net` returns None: return the model.")
    if not isinstance(model, nn.Module):
        raise Wrong(f"`make_net` should return an nn.Module, got {type(model).__name__}.")
    drops = [m for m in model.modules() if isinstance(m, DROPOUTS)]
    layers = bn_layers(model)
    if not layers:
        raise Wrong("Your net has no BatchNorm layer: the exercise is about BN and dropout.")
    if any(m.running_var is None for m in layers):
        raise Wrong(
            "A BN layer of yours has no running statistics (track_running_stats=False): in "
            "eval mode it would use each batch's own, and the question of what dropout does "
            "to the running statistics would not arise. Keep the default, True."
        )
    if not drops:
        raise Wrong("Your net has no nn.Dropout layer: add one with probability p.")
    if any(d.p != p for d in drops):
        raise Wrong(
            f"Give every dropout the probability p ({p}, the argument of `make_net`); yours: "
            f"{[d.p for d in drops]}."
        )
    return copy.deepcopy(model)


def _warm_up(model, x, passes=8):
    """Fill the running statistics by train-mode passes over ``x`` in batches of 32 (no
    gradient step); 8 passes of 32 batches leave 0.9 ** 256 of the initial buffers."""
    with torch.no_grad():
        model.train()
        for _ in range(passes):
            for chunk in x.split(32):
                model(chunk)
    return model.eval()


@NB.check("12.3", "place the dropout")
def check_dropout_placement(make_net):
    """Exercise 12.3. ``make_net(p)``: a new model from 64 features to 10 logits with at least
    one BatchNorm1d and dropout of probability ``p``, placed so that no dropout feeds a BN
    layer (dropout only after the last BN)."""
    kit.missing({"make_net": make_net}, "Write the function.")
    _dropout_net(make_net, 0.3)  # p is the argument, not a constant
    model = _dropout_net(make_net, 0.5)
    x = torch.randn(1024, FEATURES, generator=torch.Generator().manual_seed(3)) * 1.5 + 0.3
    try:
        order, out = _call_order(model, x[:16])
    except Exception as err:
        raise Wrong(
            f"Running your net on a batch of 16 rows of {FEATURES} features raised "
            f"{type(err).__name__}: {err}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.shape != (16, CLASSES):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise Wrong(f"Your net should map (16, {FEATURES}) to (16, {CLASSES}), got {shape}.")
    norms = {id(m) for m in bn_layers(model)}
    called = [i for i, m in enumerate(order) if id(m) in norms]
    if not called:
        raise Wrong(
            "Your net's forward pass never calls its BatchNorm layer: use the layers you "
            "create (e.g. in nn.Sequential, or call each one in forward)."
        )
    early = [i for i, m in enumerate(order) if isinstance(m, DROPOUTS) and i < max(called)]
    ratios = variance_shift(_warm_up(model, x), x)
    shown = ", ".join(f"{r:.2f}" for r in ratios)
    shifted = [r for r in ratios if abs(r - 1) > SHIFT_TOLERANCE]
    if early or shifted:
        where = (f"A dropout runs before a BN layer (call {early[0] + 1} of {len(order)} in "
                 f"the forward pass)" if early else
                 "A BN layer sees a variance shift, so some dropout (perhaps F.dropout in "
                 "forward) runs before it")  # fmt: skip
        raise Wrong(
            f"{where}: in training dropout zeroes units and scales the rest by 1/(1 - p), so "
            f"the BN after it learns running statistics that do not match eval mode, where "
            f"dropout is off. Measured on your net: eval-time variance / running variance = "
            f"{shown} per BN layer (1 means no shift; more than {SHIFT_TOLERANCE:g} away "
            f"counts as a shift). Move dropout after the last BN."
        )
    return (
        f"Every dropout runs after the last BN layer, so no BN sees dropout's noise: "
        f"eval-time variance / running variance = {shown} per BN layer (close to 1: no "
        f"variance shift), as Li et al. (2019) recommend."
    )


EXERCISES = NB.titles
progress, reset = NB.progress, NB.reset

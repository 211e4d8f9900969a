"""The checks of notebook 12's exercises: right answers pass, each usual mistake gets its own
message, and a learner's exception, wrong kind of answer or None is feedback, never an
internal error."""

import pytest
import torch
from torch import nn

from bnteach import sweep
from bnteach.data import load_digits
from bnteach.exercises import neighbours as ex
from bnteach.models import MLP, ResidualBlock


def blocks(model):
    return [m for m in model.network if isinstance(m, ResidualBlock)]


def good_zero_init(model):
    for block in blocks(model):
        nn.init.zeros_(block.branch[-1].weight)
    return model


def zero_all_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            nn.init.zeros_(m.weight)


def zero_first(model):
    for block in blocks(model):
        nn.init.zeros_(block.branch[1].weight)


def zero_linear(model):
    for block in blocks(model):
        nn.init.zeros_(block.branch[3].weight)


def zero_beta(model):
    for block in blocks(model):
        nn.init.zeros_(block.branch[-1].bias)


def zero_one_block(model):
    nn.init.zeros_(blocks(model)[-1].branch[-1].weight)


def zero_output(model):
    nn.init.zeros_(model.network[-1].weight)


def tiny_gamma(model):
    for block in blocks(model):
        block.branch[-1].weight.data.fill_(1e-3)


def runs_forward(model):
    good_zero_init(model)
    model.train()(torch.randn(8, 16))


def returns_string(model):
    good_zero_init(model)
    return "done"


def also_bias(model):
    good_zero_init(model)
    with torch.no_grad():
        model.network[-1].bias.add_(1)


ZERO_MISTAKES = {
    "all BN": (zero_all_bn, "stem's gamma"),
    "first BN": (zero_first, "stays dead"),
    "last linear": (zero_linear, "sqrt(0 + eps)"),
    "beta": (zero_beta, "changed nothing"),
    "one block": (zero_one_block, "not zeroed"),
    "output": (zero_output, "output layer"),
    "not zero": (tiny_gamma, "not zeroed"),
    "forward in train mode": (runs_forward, "running statistics"),
    "returns a string": (returns_string, "returned str"),
    "also another parameter": (also_bias, "also changed"),
    "raises": (lambda model: 1 / 0, "ZeroDivisionError"),
    "no parameter": (lambda: None, "does not accept"),
    "returns a Linear": (lambda model: nn.Linear(2, 2), "returned Linear other than the model"),
}


def frozen_gamma(model):
    for block in blocks(model):
        block.branch[-1].weight.requires_grad_(False).zero_()


def zeroed_copy(model):
    import copy

    model = copy.deepcopy(model)
    good_zero_init(model)
    return model


def replaces_bn(model):
    for block in blocks(model):
        block.branch[-1] = nn.Identity()


def changes_momentum(model):
    good_zero_init(model)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.momentum = 0.5


def to_double(model):
    good_zero_init(model)
    model.double()


ZERO_MISTAKES.update(
    {
        "gamma no longer trains": (frozen_gamma, "must still train"),
        "a zeroed copy": (zeroed_copy, "in place"),
        "BN replaced": (replaces_bn, "replaced or removed"),
        "momentum changed": (changes_momentum, "momentum"),
        "model.double()": (to_double, "dtype"),
    }
)


def test_zero_gamma_right_answers():
    assert ex.check_zero_gamma(good_zero_init, show=False).correct

    def in_place(model):
        for name, p in model.named_parameters():
            if name.endswith("branch.4.weight"):
                p.data.zero_()

    fb = ex.check_zero_gamma(in_place, show=False)
    assert fb.correct and "identity" in fb.message, fb.message


@pytest.mark.parametrize("name", list(ZERO_MISTAKES))
def test_zero_gamma_mistakes_get_specific_feedback(name):
    fn, phrase = ZERO_MISTAKES[name]
    fb = ex.check_zero_gamma(fn, show=False)
    assert fb.status == "wrong" and phrase in fb.message, fb.message
    assert "Internal error" not in fb.message


def test_placeholders_are_not_attempted():
    def todo(*args):
        raise NotImplementedError

    assert ex.check_zero_gamma(None, show=False).status == "not attempted"
    assert ex.check_zero_gamma(todo, show=False).status == "not attempted"
    assert ex.check_dropout_placement(None, show=False).status == "not attempted"
    assert ex.check_dropout_placement(todo, show=False).status == "not attempted"
    assert ex.check_dropout_placement(lambda p: None, show=False).status == "not attempted"
    assert ex.check_weight_decay_on_norms(None, None, show=False).status == "not attempted"


# ----------------------------------------------------------------------------- 12.2

SPEC = {"hidden_sizes": (16,), "norm": "batch", "bias": False, "optimizer": "sgd",
        "weight_decay": 1e-2}  # fmt: skip


@pytest.fixture(scope="module")
def pair_result():
    X_train, X_val, y_train, y_val = load_digits(flat=True)
    data = (X_train[:300], X_val[:100], y_train[:300], y_val[:100])
    models = {ex.DECAY: SPEC, ex.SPARE: {**SPEC, "decay_norm": False}}
    return sweep.run(list(range(5)), [0.1], epochs=2, models=models, data=data), data


def test_weight_decay_verdict_right_and_wrong(pair_result):
    result, _ = pair_result
    finals = {m: [h.val_acc[-1] for h in result.histories(model=m)] for m in (ex.DECAY, ex.SPARE)}
    from bnteach.stats import paired

    truth = paired(finals[ex.DECAY], finals[ex.SPARE]).verdict(ex.MARGIN)
    fb = ex.check_weight_decay_on_norms(result, truth, show=False)
    assert fb.correct and "gammas' norm" in fb.message, fb.message
    for wrong in set(ex.VERDICTS) - {truth}:
        fb = ex.check_weight_decay_on_norms(result, wrong, show=False)
        assert fb.status == "wrong" and "your own runs give" in fb.message, fb.message
    fb = ex.check_weight_decay_on_norms(result, "yes", show=False)
    assert fb.status == "wrong" and "should be one of" in fb.message


@pytest.mark.parametrize(
    "models, kw, phrase",
    [
        ({"a": SPEC, "b": {**SPEC, "decay_norm": False}}, {}, "named"),
        ({ex.DECAY: SPEC, ex.SPARE: SPEC}, {}, "differ only in `decay_norm`"),
        (
            {ex.DECAY: SPEC, ex.SPARE: {**SPEC, "decay_norm": False, "hidden_sizes": (8,)}},
            {},
            "differ only",
        ),  # fmt: skip
        ({ex.DECAY: {**SPEC, "decay_norm": False}, ex.SPARE: SPEC}, {}, "True for"),
        (
            {
                ex.DECAY: {**SPEC, "weight_decay": 0.0},
                ex.SPARE: {**SPEC, "weight_decay": 0.0, "decay_norm": False},
            },
            {},
            "above 0",
        ),  # fmt: skip
        ({ex.DECAY: SPEC, ex.SPARE: {**SPEC, "decay_norm": False}}, {"seeds": [0, 1]}, "5 seeds"),
        (
            {
                ex.DECAY: {**SPEC, "norm": "layer"},
                ex.SPARE: {**SPEC, "norm": "layer", "decay_norm": False},
            },
            {},
            "need BN",
        ),  # fmt: skip
    ],
)
def test_weight_decay_setup_mistakes(pair_result, models, kw, phrase):
    _, data = pair_result
    result = sweep.run(kw.get("seeds", list(range(5))), [0.1], epochs=1, models=models, data=data)
    fb = ex.check_weight_decay_on_norms(result, "unresolved", show=False)
    assert fb.status == "wrong" and phrase in fb.message, fb.message


def test_weight_decay_result_of_the_wrong_kind():
    fb = ex.check_weight_decay_on_norms({"a": 1}, "better", show=False)
    assert fb.status == "wrong" and "SweepResult" in fb.message


# ----------------------------------------------------------------------------- 12.3


def good_net(p):
    return nn.Sequential(
        nn.Linear(64, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Linear(32, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Dropout(p), nn.Linear(16, 10),
    )  # fmt: skip


DROPOUT_MISTAKES = {
    "dropout before BN": (lambda p: MLP(64, (32, 16), 10, norm="batch", dropout=p), "before a BN"),
    "dropout on the input": (
        lambda p: nn.Sequential(nn.Dropout(p), *list(good_net(p))[:-2], nn.Linear(16, 10)),
        "before a BN",
    ),
    "no dropout": (lambda p: MLP(64, (32, 16), 10, norm="batch"), "no nn.Dropout"),
    "no BN": (lambda p: MLP(64, (32,), 10, dropout=p, dropout_at="last"), "no BatchNorm"),
    "wrong p": (lambda p: good_net(0.2), "probability p"),
    "wrong output": (lambda p: nn.Sequential(*list(good_net(p))[:-1]), "(16, 10)"),
    "wrong input": (
        lambda p: nn.Sequential(nn.Linear(20, 32), *list(good_net(p))[1:]),
        "raised RuntimeError",
    ),  # fmt: skip
    "a list": (lambda p: [good_net(p)], "nn.Module"),
    "raises": (lambda p: 1 / 0, "ZeroDivisionError"),
    "Dropout1d before BN": (
        lambda p: nn.Sequential(
            nn.Linear(64, 32),
            nn.Dropout1d(p),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.Dropout(p),
            nn.Linear(32, 10),
        ),
        "before a BN",
    ),  # fmt: skip
    "F.dropout before BN": (lambda p: FunctionalDropout(p), "variance shift"),
    "p hard-coded": (lambda p: good_net(0.5), "the argument of `make_net`"),
    "a BN never called": (lambda p: UnusedBN(p), "never calls its BatchNorm"),
    "BN without running statistics": (
        lambda p: nn.Sequential(
            nn.Linear(64, 32),
            nn.BatchNorm1d(32, track_running_stats=False),
            nn.ReLU(),
            nn.Dropout(p),
            nn.Linear(32, 10),
        ),
        "track_running_stats=False",
    ),  # fmt: skip
}


class FunctionalDropout(nn.Module):
    """Dropout written in forward, in front of BN: no nn.Dropout module to find."""

    def __init__(self, p):
        super().__init__()
        self.p, self.net = p, good_net(p)

    def forward(self, x):
        h = self.net[0](x)
        h = nn.functional.dropout(h, self.p, self.training)
        return self.net[3:](self.net[2](self.net[1](h)))


class UnusedBN(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.fc, self.bn, self.drop, self.out = (
            nn.Linear(64, 32),
            nn.BatchNorm1d(32),
            nn.Dropout(p),
            nn.Linear(32, 10),
        )

    def forward(self, x):
        return self.out(self.drop(torch.relu(self.fc(x))))


def test_dropout_placement_right_answers():
    fb = ex.check_dropout_placement(good_net, show=False)
    assert fb.correct, fb.message
    fb = ex.check_dropout_placement(
        lambda p: MLP(64, (32, 16), 10, norm="batch", dropout=p, dropout_at="last"), show=False
    )
    assert fb.correct, fb.message


@pytest.mark.parametrize("name", list(DROPOUT_MISTAKES))
def test_dropout_placement_mistakes(name):
    fn, phrase = DROPOUT_MISTAKES[name]
    fb = ex.check_dropout_placement(fn, show=False)
    assert fb.status == "wrong" and phrase in fb.message, fb.message
    assert "Internal error" not in fb.message


def test_the_variance_shift_is_measured_in_the_feedback():
    fb = ex.check_dropout_placement(
        lambda p: MLP(64, (32, 16), 10, norm="batch", dropout=p), show=False
    )
    ratios = [float(r) for r in fb.message.split("= ")[1].split(" per")[0].split(", ")]
    assert 0.9 < ratios[0] < 1.1 and ratios[1] < 0.9  # only the BN after a dropout shifts
    fb = ex.check_dropout_placement(good_net, show=False)
    ratios = [float(r) for r in fb.message.split("= ")[1].split(" per")[0].split(", ")]
    assert all(0.9 < r < 1.1 for r in ratios)


def test_progress_lists_the_three_exercises():
    ex.reset()
    ex.check_zero_gamma(good_zero_init, show=False)
    table = ex.progress()
    assert table.status("12.1") == "correct" and table.status("12.3") == "not checked"
    assert "1 of 3 exercises correct" in repr(table)
    ex.reset()

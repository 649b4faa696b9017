"""The one trainer over the task protocol, with a toy task: selection direction, what it writes for
resumable and non-resumable tasks, exact resume of a toy run, the LR schedule hook and kind checks."""
import numpy as np
import pytest
import torch
from torch import nn

from pointseg.engine.checkpoint import load_checkpoint
from pointseg.engine.task import Task
from pointseg.engine.trainer import FitOptions, Trainer, better, train_epoch


class ToyRegression(Task):
    """Least squares ``y = X w`` on 32 fixed points; batches of 4 from a permutation of ``(seed, epoch)``."""

    kind, selection_metric, higher_is_better = "toy", "rmse", False

    def __init__(self, resumable: bool = True, scores: list[float] | None = None) -> None:
        self.resumable = resumable
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5])
        self.scores = scores              # forced validation scores, one per epoch

    def setup(self, device, rank=0, world_size=1, progress=True):
        super().setup(device, rank, world_size, progress)
        self.evals = 0

    def build_model(self):
        return nn.Linear(3, 1)

    def optimizer(self, model):
        return torch.optim.SGD(model.parameters(), lr=0.05)

    def lr_schedule(self, optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    def train_batches(self, model, epoch, start=0):
        perm = np.random.default_rng([7, epoch]).permutation(32)
        return [torch.as_tensor(perm[i:i + 4]) for i in range(0, 32, 4)][start:]

    def loss(self, model, idx):
        scale = 1 + 0.5 * torch.rand(())                   # a global-RNG draw per step, as dropout makes
        return scale * ((model(self.x[idx]).squeeze(-1) - self.y[idx]) ** 2).mean()

    @torch.no_grad()
    def evaluate(self, model):
        rmse = float(((model(self.x).squeeze(-1) - self.y) ** 2).mean().sqrt())
        if self.scores is not None:
            rmse = self.scores[self.evals]
        self.evals += 1
        return {"rmse": rmse}

    def checkpoint_payload(self, model):
        return {"kind": self.kind, "model": model.state_dict()}


def _fit(task, out, **kw):
    return Trainer(task, FitOptions(out=out, epochs=kw.pop("epochs", 4), device="cpu", progress=False, **kw)).fit()


def test_best_pt_follows_the_selection_direction_and_non_resumable_tasks_write_no_last_pt(tmp_path):
    res = _fit(ToyRegression(resumable=False, scores=[3.0, 1.0, 2.0, float("nan")]), tmp_path / "r")
    assert res.best_epoch == 2 and res.best_metrics == {"rmse": 1.0}          # lower is better; NaN never wins
    assert len(res.epoch_losses) == 4 and res.epoch_losses[-1] < res.epoch_losses[0]
    assert not (tmp_path / "r" / "last.pt").exists()
    ck = load_checkpoint(tmp_path / "r" / "best.pt")
    assert ck["kind"] == "toy" and ck["epoch"] == 2 and ck["global_step"] == 16 and ck["best_score"] == 1.0
    assert "optimizer" not in ck and ck["provenance"]["project"] == "pointseg"


def test_a_resumable_toy_run_stopped_mid_epoch_resumes_exactly(tmp_path):
    full = _fit(ToyRegression(), tmp_path / "a")
    _fit(ToyRegression(), tmp_path / "b", max_steps=11)                       # stops inside epoch 2
    part = load_checkpoint(tmp_path / "b" / "last.pt")
    assert (part["epoch"], part["step_in_epoch"], part["global_step"]) == (1, 3, 11)
    resumed = _fit(ToyRegression(), tmp_path / "b", resume=True)
    a, b = load_checkpoint(full.out / "last.pt"), load_checkpoint(resumed.out / "last.pt")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    assert a["scheduler"]["_last_lr"] == b["scheduler"]["_last_lr"] == [0.05 * 0.5 ** 4]
    with pytest.raises(FileExistsError, match="--resume"):
        _fit(ToyRegression(), tmp_path / "b")


def test_resume_refuses_a_run_of_another_kind(tmp_path):
    _fit(ToyRegression(), tmp_path / "a", epochs=1)
    task = ToyRegression()
    task.kind = "segmentation"
    with pytest.raises(ValueError, match="holds a 'toy' run, not a 'segmentation' one"):
        _fit(task, tmp_path / "a", resume=True)


def test_train_epoch_runs_the_tasks_batches_on_a_given_model():
    task = ToyRegression()
    task.setup(torch.device("cpu"))
    model = task.build_model()
    opt = task.optimizer(model)
    first = train_epoch(task, model, opt)
    assert train_epoch(task, model, opt, epoch=1) < first


def test_linear_warmup_schedule_gives_warmup_lr_exactly():
    from pointseg.graphs.optim import LinearWarmup, warmup_lr
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.003)
    sched = LinearWarmup(opt, 3)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs == [warmup_lr(0.003, e, 3) for e in range(1, 7)]


def test_better_ignores_nan_and_takes_anything_over_nothing():
    assert better(True, 0.5, None) and better(False, 0.5, float("nan"))
    assert not better(True, float("nan"), 0.1) and better(False, 0.1, 0.2) and not better(True, 0.1, 0.2)

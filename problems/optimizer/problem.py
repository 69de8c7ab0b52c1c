"""Optimizer discovery in the spirit of Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

Evolve ``update(params, grads, state, step, lr) -> (new_params, new_state)``. The
harness (interactive, trusted: the candidate's process never holds the data) trains
small numpy models with seeded minibatches on scikit-learn's bundled data sets (no
download) for a fixed number of steps and returns the final parameters;
the trusted scorer recomputes the full training loss from them. Score = minus the
log-scaled normalized loss at the best lr of a grid, averaged over tasks and seeds.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from threadpoolctl import ThreadpoolController

from evosearch.problem import Descriptor, InvalidOutput, Problem, Score

# A loss ratio (final / initial) at or below LOSS_FLOOR counts as fully trained;
# log-scaling between the floor and 1 keeps late progress (0.01 -> 0.001) visible.
LOSS_FLOOR = 1e-4
# What the candidate sees as "lr": half-decades wide enough to bracket every rule's best
# lr. Each (task, seed) counts at its best lr ("tuned", as optimizers are compared), so
# a rule cannot win by ignoring lr and hard-coding a good constant: averaging over the
# grid instead (lr_reduce="mean") rewards exactly that.
LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
STEPS = 200
BATCH = 128  # stochastic gradients: a rule must cope with noise, as in real training
DESCRIPTORS = (
    # log10(|theta_T| / |theta_0|): shrinking (weight decay) vs growing weights.
    Descriptor("param_growth", -0.5, 1.5, 10),
    # |delta|_1 / (sqrt(n) |delta|_2) of the total displacement theta_T - theta_0:
    # near 1 when every coordinate moved alike (sign-like rules such as Lion),
    # lower when a few coordinates moved most (gradient-proportional rules such as SGD).
    # Random Gaussian displacements give sqrt(2/pi) = 0.80; measured rules sit in [0.6, 1].
    Descriptor("update_uniformity", 0.5, 1.0, 10),
)
# Descriptor values of a program whose every run diverged: its weights blew up,
# and nothing can be said about the shape of its displacement.
DIVERGED_DESCRIPTORS = {"param_growth": 1.5, "update_uniformity": 0.5}

# Found here, on the trusted side: a sandboxed run under another uid may be unable to
# read the library files that threadpoolctl inspects.
BLAS = ThreadpoolController()

# Task name -> data set, model, hidden width, number of samples (None = all).
TASKS = {
    "softmax_digits": ("digits", "softmax", 0, None),
    "mlp_cancer": ("breast_cancer", "mlp", 32, None),
    "mlp_digits": ("digits", "mlp", 32, None),  # held out: only in the test split
    "probe_softmax": ("digits", "softmax", 0, 64),
    "probe_mlp": ("breast_cancer", "mlp", 8, 64),
}
SPLIT_TASKS = {
    "train": ("softmax_digits", "mlp_cancer"),
    "test": ("softmax_digits", "mlp_cancer", "mlp_digits"),
}


@functools.lru_cache(maxsize=None)
def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Standardized float64 features and int labels of a scikit-learn bundled data set."""
    from sklearn import datasets  # slow import: paid only where instances are built, once per process

    loader = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer}[name]
    X, y = loader(return_X_y=True)
    std = X.std(axis=0)
    X = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)  # constant pixels of digits stay 0
    y = y.astype(np.int64)
    X.flags.writeable = y.flags.writeable = False  # shared by every instance of the process
    return X, y


def make_instance(task: str, seed: int, lr: float, steps: int, batch: int | None) -> dict:
    data, model, hidden, samples = TASKS[task]
    X, y = load_dataset(data)
    if samples is not None:  # a fixed, seed-independent slice keeps probes comparable
        X, y = X[:samples], y[:samples]
    return {"task": task, "model": model, "hidden": hidden, "classes": int(y.max()) + 1,
            "seed": seed, "lr": lr, "steps": steps, "batch": batch, "X": X, "y": y}


def init_params(instance: dict) -> dict[str, np.ndarray]:
    """Seeded He-normal weights (LeCun-normal for the output layer) and zero biases."""
    rng = np.random.default_rng(instance["seed"])
    d, k, h = instance["X"].shape[1], instance["classes"], instance["hidden"]
    if instance["model"] == "softmax":
        return {"W": rng.normal(0.0, 1 / math.sqrt(d), (d, k)), "b": np.zeros(k)}
    return {"W1": rng.normal(0.0, math.sqrt(2 / d), (d, h)), "b1": np.zeros(h),
            "W2": rng.normal(0.0, 1 / math.sqrt(h), (h, k)), "b2": np.zeros(k)}


def minibatches(instance: dict):
    """Row indices of each step's minibatch: seeded shuffles, epoch after epoch (all rows
    every step when the instance has no batch size)."""
    n, batch = len(instance["y"]), instance["batch"]
    if batch is None or batch >= n:
        while True:
            yield slice(None)
    rng = np.random.default_rng([instance["seed"], 1])  # not the init's stream
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch + 1, batch):  # drop the ragged tail: equal-size steps
            yield order[start:start + batch]


def loss_and_grads(instance: dict, params: dict[str, np.ndarray], grads: bool = True, rows=slice(None)):
    """Mean softmax cross-entropy on the training rows ``rows`` (default all) and its gradients
    (or, with ``grads=False``, the training accuracy in their place)."""
    X, y = instance["X"][rows], instance["y"][rows]
    n = len(y)
    if instance["model"] == "softmax":
        logits = X @ params["W"] + params["b"]
    else:
        hidden = np.maximum(X @ params["W1"] + params["b1"], 0.0)  # ReLU
        logits = hidden @ params["W2"] + params["b2"]
    z = logits - logits.max(axis=1, keepdims=True)
    exp_z = np.exp(z)
    total = exp_z.sum(axis=1)
    label = (np.arange(n), y)
    loss = float(np.mean(np.log(total) - z[label]))
    if not grads:
        return loss, None, float((z.argmax(axis=1) == y).mean())
    d_logits = exp_z / (n * total[:, None])  # (softmax - onehot) / n
    d_logits[label] -= 1.0 / n
    if instance["model"] == "softmax":
        return loss, {"W": X.T @ d_logits, "b": d_logits.sum(axis=0)}, None
    d_hidden = (d_logits @ params["W2"].T) * (hidden > 0)
    return loss, {"W1": X.T @ d_hidden, "b1": d_hidden.sum(axis=0),
                  "W2": hidden.T @ d_logits, "b2": d_logits.sum(axis=0)}, None


def _checked_step(result, shapes: dict[str, tuple]) -> tuple[dict[str, np.ndarray], object]:
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise ValueError("update must return a pair (new_params, new_state)")
    new_params, state = result
    if not isinstance(new_params, dict) or set(new_params) != set(shapes):
        raise ValueError(f"update must return new_params as a dict with keys {sorted(shapes)}")
    out = {}
    for k, shape in shapes.items():
        p = np.asarray(new_params[k], dtype=np.float64)
        if p.shape != shape:
            raise ValueError(f"update returned new_params[{k!r}] of shape {p.shape}, expected {shape}")
        out[k] = p
    return out, state


def _round_significant(a: np.ndarray, bits: int = 20) -> np.ndarray:
    """Round to ``bits`` mantissa bits (about 6 significant digits), so that rules equal up to
    floating-point reassociation hash alike."""
    mantissa, exponent = np.frexp(a)
    return np.ldexp(np.round(np.ldexp(mantissa, bits)), exponent - bits)


class Optimizer(Problem):
    name = "optimizer"
    description = ("Lion-style optimizer discovery: evolve update(params, grads, state, step, lr); "
                   "score = -log-normalized training loss at the best lr, mean over tasks and seeds")
    descriptors = DESCRIPTORS
    timeout_s = 60.0

    def __init__(self, data_dir=None, seed=0, steps=STEPS, lr_grid=LR_GRID, seeds_per_task=2, batch_size=BATCH,
                 lr_reduce="best"):
        super().__init__(data_dir, seed)
        if int(steps) < 1:
            raise ValueError(f"steps must be a positive integer, not {steps!r}")
        if seed < 0:  # numpy seeds are non-negative
            raise ValueError(f"seed must be non-negative, not {seed!r}")
        lr_grid = tuple(float(lr) for lr in lr_grid)
        if not lr_grid or not all(math.isfinite(lr) and lr > 0 for lr in lr_grid):
            raise ValueError(f"lr_grid must be a non-empty list of positive learning rates, not {lr_grid!r}")
        if len({f"{lr:g}" for lr in lr_grid}) != len(lr_grid):  # instance names hold f"{lr:g}"
            raise ValueError(f"lr_grid has repeated learning rates: {lr_grid!r}")
        if not 1 <= int(seeds_per_task) <= 100:  # train and test seeds are 100 apart
            raise ValueError(f"seeds_per_task must be an integer in [1, 100], not {seeds_per_task!r}")
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer or None (full batch), not {batch_size!r}")
        self.steps, self.lr_grid, self.seeds_per_task = int(steps), lr_grid, int(seeds_per_task)
        self.batch_size = None if batch_size is None else int(batch_size)
        if lr_reduce not in ("best", "mean"):
            raise ValueError(f"lr_reduce must be 'best' or 'mean', not {lr_reduce!r}")
        self.lr_reduce = lr_reduce
        self._instances: dict[str, dict] = {}

    def instances(self, split):
        if split not in self._instances:  # built lazily: loading scikit-learn takes about a second
            self._instances[split] = self._build(split)
        return self._instances[split]

    def _build(self, split):
        if split == "probe":
            # Every lr once, the two models alternating, on tiny fixed slices but with the full
            # step budget: a rule whose behaviour depends on lr, tensor names or ranks, or a
            # late step count must not hash like one that does not.
            tasks = ("probe_softmax", "probe_mlp")
            pairs = [(tasks[i % 2], lr) for i, lr in enumerate(self.lr_grid)]
            if len(pairs) == 1:
                pairs.append((tasks[1], self.lr_grid[0]))
            return {f"{task}_lr{lr:g}": make_instance(task, 1000 * self.seed + 999, lr, self.steps, self.batch_size)
                    for task, lr in pairs}
        if split not in SPLIT_TASKS:
            raise ValueError(f"unknown split {split!r}")
        # Distinct init seeds per split keep the test runs unseen during evolution.
        base = 1000 * self.seed + (0 if split == "train" else 100)
        return {f"{task}_s{base + s}_lr{lr:g}": make_instance(task, base + s, lr, self.steps, self.batch_size)
                for task in SPLIT_TASKS[split] for s in range(self.seeds_per_task) for lr in self.lr_grid}

    def episode(self, instance, candidate):
        # Interactive: the data, the minibatches, the gradients and the step count stay here;
        # the candidate's update only sees what an optimizer sees. (Its process seeds random and
        # numpy's global generator before the program runs: a rule that draws random numbers
        # still gives reproducible outputs.)
        update = candidate.update
        params = init_params(instance)
        shapes = {k: p.shape for k, p in params.items()}
        state = {}
        # One BLAS thread: these matrices are small, and with workers side by side extra
        # threads only contend (10x slower measured on a loaded 2-core machine). Overflow
        # warnings are silenced: divergence is detected below.
        with BLAS.limit(limits=1, user_api="blas"), np.errstate(all="ignore"):
            for step, rows in zip(range(instance["steps"]), minibatches(instance)):
                loss, grads, _ = loss_and_grads(instance, params, rows=rows)
                if not math.isfinite(loss):
                    return {"diverged_at_step": step}
                params, state = _checked_step(update(params, grads, state, step, instance["lr"]), shapes)
                if not all(np.isfinite(p).all() for p in params.values()):
                    return {"diverged_at_step": step + 1}
        return {"params": {k: p.tolist() for k, p in params.items()}}

    def probe_episode(self, instance, candidate):
        out = self.episode(instance, candidate)
        if "params" in out:
            out["params"] = {k: _round_significant(np.asarray(p)).tolist() for k, p in out["params"].items()}
        return out

    def score(self, instance, output):
        init = init_params(instance)
        loss0, _, _ = loss_and_grads(instance, init, grads=False)
        if not isinstance(output, dict) or not ({"params"} <= set(output) or {"diverged_at_step"} <= set(output)):
            raise InvalidOutput("expected a dict with 'params' or 'diverged_at_step'")
        if "params" not in output:
            # Only the honest harness reports divergence, and claiming it can only lower the score.
            return self._diverged(instance)
        params = output["params"]
        if not isinstance(params, dict) or set(params) != set(init):
            raise InvalidOutput(f"params must be a dict with keys {sorted(init)}")
        final = {}
        for k, p0 in init.items():
            if not isinstance(params[k], list):
                raise InvalidOutput(f"params[{k!r}] must be a (nested) list of numbers")
            try:
                p = np.array(params[k], dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise InvalidOutput(f"params[{k!r}] is not a rectangular list of numbers: {e}") from None
            if p.shape != p0.shape:
                raise InvalidOutput(f"params[{k!r}] has shape {p.shape}, expected {p0.shape}")
            if not np.isfinite(p).all():
                raise InvalidOutput(f"params[{k!r}] holds NaN or infinite values")
            final[k] = p
        with np.errstate(all="ignore"):  # overflow is checked for below
            loss, _, accuracy = loss_and_grads(instance, final, grads=False)
            theta0 = np.concatenate([p.ravel() for p in init.values()])
            theta = np.concatenate([final[k].ravel() for k in init])
            delta = theta - theta0
            delta_norm = float(np.linalg.norm(delta))
            uniformity = float(np.abs(delta).sum() / (math.sqrt(delta.size) * delta_norm)) if delta_norm > 0 else 0.0
            growth = math.log10(max(float(np.linalg.norm(theta)), 1e-300) / float(np.linalg.norm(theta0)))
        if not all(map(math.isfinite, (loss, growth, uniformity))):  # finite weights near the end of the float range
            return self._diverged(instance)
        ratio = loss / loss0
        normalized = 1.0 - math.log(min(max(ratio, LOSS_FLOOR), 1.0)) / math.log(LOSS_FLOOR)
        return {"score": -normalized, "normalized_loss": normalized, "loss_ratio": ratio, "accuracy": accuracy,
                "diverged": 0.0, "log10_lr": math.log10(instance["lr"]), "param_growth": growth,
                "update_uniformity": uniformity}

    @staticmethod
    def _diverged(instance) -> dict[str, float]:
        # Worst score. Measurements that need finite weights are left out rather than NaN
        # (the evaluator rejects non-finite metrics); aggregate averages them over the rest.
        return {"score": -1.0, "normalized_loss": 1.0, "accuracy": 0.0, "diverged": 1.0,
                "log10_lr": math.log10(instance["lr"])}

    def aggregate(self, per_instance):
        # A run is one (task, seed); its instances differ only in lr (names end in "_lr<lr>").
        runs: dict[str, list[dict[str, float]]] = {}
        for name, m in per_instance.items():
            runs.setdefault(name.rsplit("_lr", 1)[0], []).append(m)
        # Each run at its best lr (ties: the first in grid order).
        best = [min(ms, key=lambda m: m["normalized_loss"]) for ms in runs.values()]
        every = list(per_instance.values())
        counted = best if self.lr_reduce == "best" else every
        finished = [m for m in counted if not m["diverged"]]
        desc = {d.name: float(np.mean([m[d.name] for m in finished])) if finished else DIVERGED_DESCRIPTORS[d.name]
                for d in self.descriptors}
        metrics = {"normalized_loss": float(np.mean([m["normalized_loss"] for m in counted])),
                   "accuracy": float(np.mean([m["accuracy"] for m in counted])),
                   "best_lr_normalized_loss": float(np.mean([m["normalized_loss"] for m in best])),
                   "grid_mean_normalized_loss": float(np.mean([m["normalized_loss"] for m in every])),
                   "best_log10_lr": float(np.mean([m["log10_lr"] for m in best])),
                   "diverged": float(np.mean([m["diverged"] for m in every]))}
        if finished:  # the median: ratios span tens of orders of magnitude (losses can reach 0)
            metrics["loss_ratio_median"] = float(np.median([m["loss_ratio"] for m in finished]))
        return Score(score=float(np.mean([m["score"] for m in counted])), descriptors=desc, metrics=metrics)

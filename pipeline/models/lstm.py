"""An LSTM over the sequence of feature vectors (PyTorch, CPU), early-stopped on validation loss.

Two ways to read the sequence (``state``):

- ``"carried"`` (the default): the probability for row ``i`` is the head on the hidden state after
  running the LSTM over rows ``0 .. i`` of the sequence given to ``predict_proba``, from a zero
  state at row 0, one step per row -- a live model takes one step per tick and keeps h and c,
  and that is this model exactly. Rows with a NaN or infinite feature are not part of the
  sequence: their probability is NaN and the state passes them unchanged (``_raw_proba``; the
  compiled evaluator does the same). Trained with truncated back-propagation through time:
  the training rows are cut into ``streams = max(1, batch_size // window)`` contiguous segments
  run side by side, ``window`` steps per optimiser step, the state carried (detached) from one
  chunk to the next, the loss on every row; each epoch starts the chunk grid at a seeded random
  offset. Validation loss is the predict-time one: the validation rows as one sequence.
- ``"window"``: the probability for row ``i`` reads rows ``i - window + 1 .. i`` only, in order,
  from a zero state, and the head reads the last hidden state. Rows before ``window - 1`` have a
  short history: their window is left-padded with copies of the first row, as if the market had
  stood still at the first row -- which is also what a live ring buffer of the last ``window``
  rows, filled with its first observation, holds at start-up. A live model re-runs ``window``
  steps per tick.

Either way the batch probabilities here are what a streaming implementation computes, given the
same rows from the same start.

Features are standardised with the training fold's mean and std (a constant column gets std 1).
Classes are balanced with ``pos_weight = negatives / positives`` in the loss. Training shuffles
which windows go into a mini-batch (each window keeps its own time order; the folds stay in time
order), with a seeded generator. Reproducible: seeded initialisation and shuffling, and
``torch.use_deterministic_algorithms(True)`` during fit and predict (restored afterwards).

Saved without pickle: ``lstm.npz`` holds the state_dict tensors (``lstm.weight_ih_l0`` ...) and
the standardisation, as float32/float64 numpy arrays, ready for a flat-array export.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from pipeline.models.base import MODEL_FILE, Model, positive_weight

STATE_FILE = "lstm.npz"
PREDICT_BATCH = 4096


class _WindowLSTM(nn.Module):
    def __init__(self, n_features: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, num_layers=layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        output, _ = self.lstm(windows)
        return self.head(self.dropout(output[:, -1, :])).squeeze(-1)

    def steps(self, seq: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None):
        """Logits ``[batch, steps]`` at every step of ``seq`` from ``state`` (None: zeros), and the state after."""
        output, state = self.lstm(seq, state)
        return self.head(self.dropout(output)).squeeze(-1), state


class _EarlyStopping:
    """Validation-loss early stopping shared by both ways of training: the best weights so far
    (an improvement beats the best by more than 1e-7), a stop after ``patience`` epochs without one."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best_loss, self.best_epoch, self.best_state = np.inf, -1, None
        self.history: list[float] = []

    def should_stop(self, val_loss: float, epoch: int, net: nn.Module) -> bool:
        self.history.append(val_loss)
        if val_loss < self.best_loss - 1e-7:
            self.best_loss, self.best_epoch = val_loss, epoch
            self.best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            return False
        return epoch - self.best_epoch >= self.patience

    def restore_best(self, net: nn.Module) -> None:
        if self.best_state is not None:
            net.load_state_dict(self.best_state)


class LSTMModel(Model):
    kind: ClassVar[str] = "lstm"
    defaults: ClassVar[dict[str, Any]] = {
        "state": "carried",  # "carried": one step per row, state kept; "window": each row's last `window` rows
        "window": 16,  # "window": rows per window (a live ring of them); "carried": steps per truncated-BPTT chunk
        "hidden": 32,
        "layers": 1,
        "dropout": 0.1,
        "learning_rate": 2e-3,
        "weight_decay": 1e-5,
        "batch_size": 256,
        "max_epochs": 40,
        "patience": 5,  # epochs without a better validation loss before stopping
        "grad_clip": 1.0,
    }

    net: _WindowLSTM | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def _fit(self, X, y, X_val, y_val) -> None:
        p = self.params
        if p["state"] not in ("carried", "window"):
            raise ValueError(f"lstm: state {p['state']!r} is not 'carried' or 'window'")
        self.mean = X.mean(axis=0)
        std = X.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)
        if p["state"] == "carried":
            return self._fit_carried(X, y, X_val, y_val)
        with _deterministic(self.seed):
            generator = torch.Generator().manual_seed(self.seed)
            self.net = _WindowLSTM(X.shape[1], p["hidden"], p["layers"], p["dropout"])
            windows, target = self._windows(X), torch.as_tensor(y, dtype=torch.float32)
            pos_weight = positive_weight(y)
            loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
            optimiser = torch.optim.Adam(self.net.parameters(), lr=p["learning_rate"], weight_decay=p["weight_decay"])
            val = None if X_val is None else (self._windows(X_val), torch.as_tensor(y_val, dtype=torch.float32))
            stopping, epochs_run = _EarlyStopping(p["patience"]), 0
            for epoch in range(p["max_epochs"]):
                self.net.train()
                order = torch.randperm(len(target), generator=generator)
                for start in range(0, len(order), p["batch_size"]):
                    batch = order[start:start + p["batch_size"]]
                    optimiser.zero_grad()
                    loss = loss_fn(self.net(windows[batch]), target[batch])
                    loss.backward()
                    nn.utils.clip_grad_norm_(self.net.parameters(), p["grad_clip"])
                    optimiser.step()
                epochs_run = epoch + 1
                if val is None:
                    continue
                if stopping.should_stop(float(loss_fn(self._logits(val[0]), val[1])), epoch, self.net):
                    break
            stopping.restore_best(self.net)
        self.net.eval()
        self.fit_info.update(epochs=epochs_run, best_epoch=stopping.best_epoch, pos_weight=pos_weight,
                             best_val_loss=None if val is None else stopping.best_loss,
                             val_loss_history=stopping.history)

    def _fit_carried(self, X, y, X_val, y_val) -> None:
        """Truncated BPTT over ``streams`` contiguous segments of the rows (module docstring)."""
        p = self.params
        window = p["window"]
        with _deterministic(self.seed):
            generator = torch.Generator().manual_seed(self.seed)
            self.net = _WindowLSTM(X.shape[1], p["hidden"], p["layers"], p["dropout"])
            streams = max(1, min(p["batch_size"] // window, len(X) // window))
            length = -(-len(X) // streams)  # rows per segment; the last one is padded and masked
            pad = streams * length - len(X)
            standard = np.concatenate([self._standard(X), np.zeros((pad, X.shape[1]), np.float32)])
            seq = torch.from_numpy(standard).reshape(streams, length, X.shape[1])
            target = torch.as_tensor(np.r_[y, np.zeros(pad)], dtype=torch.float32).reshape(streams, length)
            mask = torch.as_tensor(np.r_[np.ones(len(y)), np.zeros(pad)], dtype=torch.float32).reshape(streams, length)
            pos_weight = positive_weight(y)
            loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight), reduction="none")
            optimiser = torch.optim.Adam(self.net.parameters(), lr=p["learning_rate"], weight_decay=p["weight_decay"])
            stopping, epochs_run = _EarlyStopping(p["patience"]), 0
            for epoch in range(p["max_epochs"]):
                self.net.train()
                state = None
                offset = int(torch.randint(window, (1,), generator=generator)) if length > window else 0
                starts = [0, *range(offset or window, length, window)]
                for start, stop in zip(starts, [*starts[1:], length]):
                    optimiser.zero_grad()
                    logits, state = self.net.steps(seq[:, start:stop], state)
                    weight = mask[:, start:stop]
                    loss = (loss_fn(logits, target[:, start:stop]) * weight).sum() / weight.sum().clamp(min=1.0)
                    loss.backward()
                    nn.utils.clip_grad_norm_(self.net.parameters(), p["grad_clip"])
                    optimiser.step()
                    state = tuple(s.detach() for s in state)
                epochs_run = epoch + 1
                if X_val is None:
                    continue
                val_loss = float(nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))(
                    self._carried_logits(X_val), torch.as_tensor(y_val, dtype=torch.float32)))
                if stopping.should_stop(val_loss, epoch, self.net):
                    break
            stopping.restore_best(self.net)
        self.net.eval()
        self.fit_info.update(epochs=epochs_run, best_epoch=stopping.best_epoch, pos_weight=pos_weight,
                             streams=streams, best_val_loss=None if X_val is None else stopping.best_loss,
                             val_loss_history=stopping.history)

    def _raw_proba(self, X: np.ndarray) -> np.ndarray:
        with _deterministic(self.seed):
            if self.params["state"] == "carried":
                finite = np.isfinite(X).all(axis=1)
                out = np.full(len(X), np.nan)
                out[finite] = torch.sigmoid(self._carried_logits(X[finite])).numpy()
                return out
            return torch.sigmoid(self._logits(self._windows(X))).numpy().astype(np.float64)

    def _standard(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.std).astype(np.float32)

    def _carried_logits(self, X: np.ndarray) -> torch.Tensor:
        """Logits of every row of X as one sequence from a zero state (chunks of rows, state carried)."""
        self.net.eval()
        seq = torch.from_numpy(self._standard(X))[None]
        out, state = [], None
        with torch.no_grad():
            for start in range(0, len(X), PREDICT_BATCH):
                logits, state = self.net.steps(seq[:, start:start + PREDICT_BATCH], state)
                out.append(logits[0])
        return torch.cat(out) if out else torch.zeros(0)

    def _windows(self, X: np.ndarray) -> torch.Tensor:
        """``[n, window, k]`` float32 view: row i's window is standardised rows i-window+1..i."""
        window = self.params["window"]
        standard = self._standard(X)
        padded = np.concatenate([np.repeat(standard[:1], window - 1, axis=0), standard])
        # unfold gives [n, k, window] as a view (no copy of n * window rows); transpose to time-major.
        return torch.from_numpy(padded).unfold(0, window, 1).transpose(1, 2)

    def _logits(self, windows: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        with torch.no_grad():
            return torch.cat([self.net(windows[s:s + PREDICT_BATCH]) for s in range(0, len(windows), PREDICT_BATCH)])

    def _save_state(self, directory: Path) -> None:
        arrays = {f"net.{k}": v.detach().numpy() for k, v in self.net.state_dict().items()}
        np.savez(directory / STATE_FILE, mean=self.mean, std=self.std, **arrays)

    def _load_state(self, directory: Path) -> None:
        p = self.params
        if "state" not in json.loads((directory / MODEL_FILE).read_text())["params"]:
            p["state"] = "window"  # saved before "state" existed: every such model read windows
        with np.load(directory / STATE_FILE, allow_pickle=False) as state:
            self.mean, self.std = state["mean"], state["std"]
            weights = {k.removeprefix("net."): torch.from_numpy(state[k].copy())
                       for k in state.files if k.startswith("net.")}
        self.net = _WindowLSTM(self.n_features, p["hidden"], p["layers"], p["dropout"])
        self.net.load_state_dict(weights)
        self.net.eval()


@contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seeded torch RNG and deterministic kernels inside, the caller's settings restored after."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(previous)

"""Baseline: the best hand-written PyTorch training loop for the seed ConvNet on MNIST.

The whole training set is normalised once into a float32 tensor ``(N, 1, 28, 28)``; each epoch
takes shuffled index batches (``torch.randperm`` + slicing), no DataLoader, Adam, NLL loss.

    python bench/baselines/raw_torch_loop.py --epochs 1 [--save /tmp/bench_convnet.pt]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import MEAN, STD, load_convnet_class, load_mnist  # noqa: E402


def to_tensor(images_u8: np.ndarray, mean: float = MEAN, std: float = STD) -> torch.Tensor:
    """uint8 ``(N, 28, 28)`` → float32 ``(N, 1, 28, 28)`` normalised by ``mean`` and ``std`` (of
    the [0, 1]-scaled pixels; default: MNIST's usual 0.1307 and 0.3081)."""
    x = torch.from_numpy(np.array(images_u8, copy=True)).float().div_(255.0)
    return x.sub_(mean).div_(std).unsqueeze(1)


def train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 64,
    generator: torch.Generator | None = None,
) -> float:
    """One epoch over pre-normalised tensors with shuffled index batches; returns the last loss.

    ``generator`` draws the shuffle (default: torch's global RNG, which dropout also draws
    from); a generator seeded like modelcycle's (``torch.Generator().manual_seed(seed)``) gives
    the same data order as the PyTorch plugin's ``fit``."""
    model.train()
    perm = torch.randperm(x.shape[0], generator=generator)
    loss = torch.zeros(())
    for start in range(0, x.shape[0], batch_size):
        idx = perm[start : start + batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = F.nll_loss(model(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
    return float(loss.item())


def run_epoch(
    images_u8: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 1,
    epochs: int = 1,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Train a fresh ConvNet (``torch.manual_seed(seed)``) for ``epochs`` epochs.

    ``channels_last`` (off by default, the reference loop is NCHW) puts model and data in
    channels-last memory format, which avoids torch's slow NCHW max-pool kernel on CPU.

    Returns ``dict(seconds=per-epoch seconds (median over epochs), images_per_s, final_loss,
    epoch_seconds=[...], model=the trained model)``. Normalisation is outside the timing.
    """
    torch.manual_seed(seed)
    model = load_convnet_class()()
    x = to_tensor(images_u8)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    times, loss = [], float("nan")
    for _ in range(epochs):
        t0 = time.perf_counter()
        loss = train_one_epoch(model, optimizer, x, y, batch_size)
        times.append(time.perf_counter() - t0)
    seconds = float(np.median(times))
    return {
        "seconds": seconds,
        "images_per_s": x.shape[0] / seconds,
        "final_loss": loss,
        "epoch_seconds": times,
        "model": model,
    }


@torch.inference_mode()
def evaluate(model: torch.nn.Module, test_images: np.ndarray, test_labels: np.ndarray, batch_size: int = 1000,
             mean: float = MEAN, std: float = STD) -> float:
    """Test accuracy (0-1) of ``model`` on uint8 images ``(N, 28, 28)``, normalised as :func:`to_tensor`."""
    model.eval()
    x = to_tensor(test_images, mean, std)
    y = torch.from_numpy(np.asarray(test_labels, dtype=np.int64))
    correct = sum(int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum()) for i in range(0, len(x), batch_size))
    return correct / len(x)


def main(argv: list[str] | None = None) -> None:
    """CLI: train, print seconds/epoch and test accuracy, optionally save the state_dict."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    ap.add_argument("--save", type=Path, help="write the trained state_dict here")
    args = ap.parse_args(argv)
    train_x, train_y = load_mnist("train")
    test_x, test_y = load_mnist("test")
    r = run_epoch(train_x, train_y, args.batch_size, args.lr, args.seed, args.epochs, args.channels_last)
    acc = evaluate(r["model"], test_x, test_y)
    epochs = ", ".join(f"{t:.2f}" for t in r["epoch_seconds"])
    print(f"threads={torch.get_num_threads()} epochs={args.epochs} seconds/epoch={r['seconds']:.2f} "
          f"[{epochs}] images/s={r['images_per_s']:.0f} final_loss={r['final_loss']:.4f} test_acc={acc * 100:.2f}%")
    if args.save:
        torch.save(r["model"].state_dict(), args.save)
        print(f"saved {args.save}")


if __name__ == "__main__":
    main()

"""Train the ConvNet on MNIST: a SageMaker script-mode training script, written the way the
mlmonitor use cases are (hyperparameters as arguments, SM_* variables, model.pth in SM_MODEL_DIR).

    python train.py --epochs 2 --batch-size 64 --lr 0.001 --log-interval 100 [--backend gloo]

With several hosts (SM_HOSTS) and --backend, training is data parallel (DistributedDataParallel).
"""
import argparse
import gzip
import json
import logging
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import torch.optim as optim
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from pt_models import ConvNet

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)
logger.addHandler(logging.StreamHandler(sys.stdout))

MEAN, STD = 0.1307, 0.3081


def read_idx(path):
    """An IDX file (gzip or not) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(channel, stem):
    for name in (stem + ".gz", stem, os.path.join("MNIST", "raw", stem)):
        path = os.path.join(channel, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{stem}(.gz) not found in {channel}")


def load_split(channel, train, limit):
    """Images normalised as (N, 1, 28, 28) float32 and labels; torchvision when installed."""
    try:
        from torchvision import datasets
    except ImportError:
        prefix = "train" if train else "t10k"
        images = read_idx(find(channel, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(find(channel, f"{prefix}-labels-idx1-ubyte"))
    else:
        split = datasets.MNIST(channel, train=train, download=False)
        images, labels = split.data.numpy(), split.targets.numpy()
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = (torch.from_numpy(images.astype(np.float32) / 255.0) - MEAN) / STD
    return TensorDataset(x.unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def test(model, loader):
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for data, target in loader:
            output = model(data)
            loss += F.nll_loss(output, target, reduction="sum").item()
            correct += output.argmax(dim=1).eq(target).sum().item()
    total = len(loader.dataset)
    logger.info("Test set: Average loss: {:.4f}, Accuracy: {}/{} ({:.0f}%)\n".format(
        loss / total, correct, total, 100.0 * correct / total))


def train(args):
    world_size = len(args.hosts)
    distributed = world_size > 1 and args.backend is not None
    rank = args.hosts.index(args.current_host)
    if distributed:
        os.environ.setdefault("MASTER_ADDR", args.hosts[0])
        os.environ.setdefault("MASTER_PORT", "7777")
        os.environ["WORLD_SIZE"], os.environ["RANK"] = str(world_size), str(rank)
        dist.init_process_group(backend=args.backend, rank=rank, world_size=world_size)
        logger.info("Initialized the distributed environment: '{}' backend on {} nodes. Current host rank is {}.".format(
            args.backend, dist.get_world_size(), dist.get_rank()))
    torch.manual_seed(args.seed)
    train_set = load_split(args.train, True, args.max_train_samples)
    test_set = load_split(args.test, False, args.max_test_samples)
    sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, seed=args.seed) if distributed else None
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler)
    test_loader = DataLoader(test_set, batch_size=args.test_batch_size)
    model = ConvNet()
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(1, args.epochs + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader, 1):
            optimizer.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            optimizer.step()
            if batch_idx % args.log_interval == 0:
                logger.info("Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}".format(
                    epoch, batch_idx * len(data), len(train_loader.sampler),
                    100.0 * batch_idx / len(train_loader), loss.item()))
        if rank == 0:
            test(model, test_loader)
    if rank == 0:
        save_model(model.module if distributed else model, args.model_dir)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


def save_model(model, model_dir):
    logger.info("Saving the model.")
    path = os.path.join(model_dir, "model.pth")
    torch.save(model.cpu().state_dict(), path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--test-batch-size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-interval", type=int, default=100)
    parser.add_argument("--backend", type=str, default=None, help="distributed backend (gloo) with several hosts")
    parser.add_argument("--max-train-samples", type=int, default=0, help="train on the first N images (0: all)")
    parser.add_argument("--max-test-samples", type=int, default=0, help="test on the first N images (0: all)")
    # the container environment
    parser.add_argument("--hosts", type=json.loads, default=os.environ.get("SM_HOSTS", '["algo-1"]'))
    parser.add_argument("--current-host", type=str, default=os.environ.get("SM_CURRENT_HOST", "algo-1"))
    parser.add_argument("--model-dir", type=str, default=os.environ.get("SM_MODEL_DIR", "model"))
    parser.add_argument("--train", type=str, default=os.environ.get("SM_CHANNEL_TRAINING"))
    parser.add_argument("--test", type=str, default=os.environ.get("SM_CHANNEL_TESTING"))
    parser.add_argument("--num-gpus", type=int, default=int(os.environ.get("SM_NUM_GPUS", "0")))
    return parser.parse_args(argv)


if __name__ == "__main__":
    train(parse_args())

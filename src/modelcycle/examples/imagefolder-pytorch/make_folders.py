"""Write MNIST as PNG class folders for the ``imagefolder`` example.

    python make_folders.py [--out images] [--train 6000] [--test 1000] [--color] [--size H W]

writes ``OUT/train/<digit>/<index>.png`` and ``OUT/test/<digit>/<index>.png`` from the first
``--train`` / ``--test`` MNIST images (found through modelcycle's ``mnist`` dataset: the
``MODELCYCLE_DATA_DIR`` or cache, else downloaded). ``--color`` tints each digit with a colour of
its class (RGB PNGs); ``--size H W`` resizes them. Replace the folders with your own images:
one sub-folder per class.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from modelcycle.core.datasets import load_dataset

#: One colour per digit for --color (RGB, 0..1).
TINTS = np.array([[1, .2, .2], [.2, 1, .2], [.3, .3, 1], [1, 1, .2], [1, .2, 1],
                  [.2, 1, 1], [1, .6, .2], [.6, .3, 1], [.6, 1, .4], [1, 1, 1]])


def write(images: np.ndarray, labels: np.ndarray, out: Path, color: bool, size: tuple[int, int] | None) -> None:
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = out / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        picture = image if not color else (image[..., None] * TINTS[int(label)]).astype(np.uint8)
        png = Image.fromarray(picture)
        if size is not None:
            png = png.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        png.save(folder / f"{index:05d}.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "images"))
    parser.add_argument("--train", type=int, default=6000, help="train images (of 60,000)")
    parser.add_argument("--test", type=int, default=1000, help="test images (of 10,000)")
    parser.add_argument("--color", action="store_true", help="tint digits by class (RGB)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None)
    args = parser.parse_args(argv)
    mnist = load_dataset("mnist")
    out = Path(args.out)
    for split, count, name in ((mnist.train, args.train, "train"), (mnist.test, args.test, "test")):
        part = split.take(count)
        write(part.images, part.labels, out / name, args.color, tuple(args.size) if args.size else None)
        print(f"wrote {len(part)} images to {out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A user's own torch network (``model: {class: "nets.py:MyNet"}``) for the PyTorch and
Lightning plugins: constructed, checked on two real records, and wrapped so the rest of the
torch library sees what the built-in networks return — log-probabilities.

:class:`LogProbs` turns the declared ``output`` into log-probabilities (``logits`` →
``log_softmax``, so NLL on it is exactly cross-entropy; ``probs`` → ``log``; ``log_probs`` →
as is). Training, evaluation, checkpoints and serving therefore run unchanged; ``model.pth``
holds the user network's own ``state_dict`` (no wrapper prefix), loadable into ``MyNet`` by
anyone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from modelcycle.core.user_code import UserCode, UserCodeError, construct, load_packaged_code, load_user_code

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.artifacts import Manifest
    from modelcycle.lib.torch.config import PytorchModelConfig

__all__ = ["LogProbs", "unwrap", "build_user_net", "check_output", "rebuild_user_net"]

_EPS = 1e-12


class LogProbs(nn.Module):
    """Log-probabilities ``(N, K)`` of a network whose ``forward`` returns ``output``."""

    def __init__(self, user_net: nn.Module, output: str) -> None:
        super().__init__()
        if output not in ("logits", "log_probs", "probs"):
            raise ValueError(f"output must be logits, log_probs or probs, not {output!r}")
        self.user_net = user_net
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.user_net(x)
        if self.output == "logits":
            return F.log_softmax(out, dim=1)
        if self.output == "probs":
            return out.clamp_min(_EPS).log()
        return out


def unwrap(model: nn.Module) -> nn.Module:
    """The user's network inside a :class:`LogProbs` (``model`` itself otherwise)."""
    return model.user_net if isinstance(model, LogProbs) else model


def _instantiate(code: UserCode, config: PytorchModelConfig, input_shape: tuple[int, ...],
                 num_classes: int, kind: type[nn.Module], kind_name: str) -> nn.Module:
    net = construct(code, config.options, input_shape, num_classes)
    if not isinstance(net, kind):
        raise UserCodeError(
            f"model.class {code.where} built a {type(net).__name__}, not {kind_name}; subclass {kind_name} "
            "(or return one from the function)"
        )
    return net


def check_output(net: nn.Module, sample: torch.Tensor, num_classes: int, where: str) -> None:
    """One dry forward (eval mode, no gradients) on ``sample`` (2 real normalised records): the
    output must be a tensor of shape ``(len(sample), num_classes)``.

    Raises:
        UserCodeError: the forward raised, or returned something of another type or shape.
    """
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        with torch.no_grad():
            out = net(sample)
    except Exception as exc:  # noqa: BLE001 - the user's forward failed: say on what
        raise UserCodeError(
            f"model.class {where}: forward on {len(sample)} training records of shape {tuple(sample.shape)} "
            f"(N, C, H, W) raised {type(exc).__name__}: {exc}; make forward accept normalised images of that shape"
        ) from None
    finally:
        for module, training in modes:
            module.training = training
    expected = (len(sample), num_classes)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserCodeError(
            f"model.class {where}: forward on {len(sample)} records must return a tensor of shape {expected} "
            f"(N, num_classes), got {got}; size the last layer with the num_classes argument"
        )


def build_user_net(config: PytorchModelConfig, source_dir: Path | None, input_shape: tuple[int, ...],
                   num_classes: int, sample: torch.Tensor, kind: type[nn.Module] = nn.Module,
                   kind_name: str = "torch.nn.Module") -> tuple[UserCode, nn.Module]:
    """Load ``config.class`` (relative to ``source_dir``), construct it, check it is a ``kind``
    and that it maps ``sample`` to ``(2, num_classes)``; returns the code and the bare network.

    Raises:
        UserCodeError: any of those steps failed (names the file and the fix).
    """
    assert config.user_class is not None
    code = load_user_code(config.user_class, source_dir or Path.cwd())
    net = _instantiate(code, config, input_shape, num_classes, kind, kind_name)
    check_output(net, sample, num_classes, code.where)
    return code, net


def rebuild_user_net(model_dir: Path, manifest: Manifest) -> nn.Module:
    """The user's network of a trained model, from the model directory's ``code/user/`` copy
    (never the use case directory), wrapped in :class:`LogProbs` per the manifest's ``output``."""
    obj = load_packaged_code(model_dir, manifest.user_code)
    code = UserCode(ref=_ref(manifest), source=Path(model_dir) / manifest.user_code["file"], obj=obj,
                    sha256=manifest.user_code.get("sha256", ""))
    options = dict(manifest.model.get("options") or {})
    net = construct(code, options, manifest.model_input_shape, len(manifest.classes))
    if not isinstance(net, nn.Module):
        raise UserCodeError(f"model.class {code.where} built a {type(net).__name__}, not a torch.nn.Module")
    return LogProbs(net, str(manifest.model.get("output") or "logits"))


def _ref(manifest: Manifest) -> Any:
    from modelcycle.core.user_code import CodeRef

    record = manifest.user_code
    return CodeRef(spec=record.get("class", record["file"]), name=record["name"], file=record["file"])


"""``modelcycle transform`` beyond this machine: inputs and outputs at a URI (``s3://...``) and
scoring as a platform's batch job (a SageMaker Transformer job), through the platform hooks
``fetch_transform_input``, ``store_transform_output`` and ``run_transform_job``.

URIs: the platform that reads a scheme is found by asking the run's platform (``--platform``),
then ``serving.platform``, ``training.platform`` and every other installed platform; the first
that answers downloads the prefix's ``.npy``/``.jsonl`` objects into a folder (source names are
the keys relative to the prefix) or uploads the finished output file.

A batch job (:func:`run_job`) scores what the local transform would, and its output has the same
shape: one line per record, the endpoint's answer for that record plus ``"source"``, ``"index"``
and, for JSON Lines, ``"line"``. What is sent:

- an input prefix of only ``.jsonl`` objects is scored where it is, one request per non-blank
  line (``application/json``, ``SplitType: Line``); of only ``.npy`` objects, one request per
  object (``application/x-npy``, ``SplitType: None``), whose answer holds one row per record;
- anything else (a split, a local folder, a mixed prefix) is written as request files first:
  ``<source>.jsonl`` (a ``.jsonl`` source keeps its name), one JSON request body per line —
  a ``.jsonl`` line as it is, a ``.npy``/split record as ``{"instances": [record]}``.

The platform brings back one ``<object>.out`` per request file with one answer per request line;
an answer in the OpenScale shape (``{"predictions": [{"fields", "values"}]}``) is split into one
line per record, any other JSON object is written as it is (plus the source fields). Payload
logging (``--log-payload``) needs the in-process transform.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from modelcycle.core.errors import PluginContractError, PluginNotFoundError
from modelcycle.core.transform_sources import InvalidRecord, Source, TransformError, file_sources, split_source

if TYPE_CHECKING:  # pragma: no cover
    from modelcycle.core.view import UseCaseView

__all__ = ["is_uri", "job_platform", "fetch_input", "store_output", "run_job"]

IN_PROCESS = "local"  # the platform name that means: score in this process


def is_uri(path: str | os.PathLike[str] | None) -> bool:
    """Whether ``path`` is a URI (``scheme://...``) rather than a local path."""
    return path is not None and "://" in os.fspath(path)


def _candidates(use_case: UseCaseView, first: str | None) -> list[str]:
    from modelcycle.core.registry import installed_plugins

    names = [first, use_case.config.serving.platform, use_case.config.training.platform]
    names += sorted(plugin.name for plugin in installed_plugins(("platform",)))
    return list(dict.fromkeys(name for name in names if name))


def _load(use_case: UseCaseView, name: str) -> Any:
    """Platform ``name`` loaded for serving (else training); ``None`` when it cannot load."""
    for role in ("serving", "training"):
        try:
            return use_case.registry.load_platform(name, role)
        except (PluginContractError, PluginNotFoundError):
            continue
    return None


def _ask(use_case: UseCaseView, hook: str, first: str | None, what: str, **kwargs: Any) -> Any:
    """The first platform's answer to ``hook`` (see the module doc)."""
    tried = []
    for name in _candidates(use_case, first):
        plugin = _load(use_case, name)
        if plugin is None or not hasattr(plugin, hook):
            continue
        tried.append(name)
        try:
            return use_case.registry.call_platform(name, hook, **kwargs)
        except PluginContractError:  # this platform does not read that scheme
            continue
    scheme = str(kwargs.get("uri", "")).split("://", 1)[0]
    raise TransformError(f"{what} {kwargs.get('uri')}: no installed platform reads {scheme}:// URIs (asked: "
                         f"{', '.join(tried) or 'none'}); copy the files to a local folder, or install the platform "
                         "for that store (s3:// is read by the sagemaker platform: pip install 'modelcycle[sagemaker]')")


def fetch_input(use_case: UseCaseView, uri: str, directory: Path, platform: str | None) -> list[str]:
    """Download the ``.npy``/``.jsonl`` objects under ``uri`` into ``directory``; their names."""
    directory.mkdir(parents=True, exist_ok=True)
    return list(_ask(use_case, "fetch_transform_input", platform, "--input", uri=uri, directory=directory))


def store_output(use_case: UseCaseView, path: Path, uri: str, platform: str | None) -> str:
    """Upload the finished output ``path`` to ``uri``; the URI written."""
    return str(_ask(use_case, "store_transform_output", platform, "--output", path=path, uri=uri))


def job_platform(use_case: UseCaseView, platform: str | None) -> str | None:
    """The platform to run a batch job on: ``platform`` (``--platform``) or ``serving.platform``
    when it implements ``run_transform_job``; ``None`` to score in-process (``local``, or a
    configured serving platform without batch jobs).

    Raises:
        TransformError: ``--platform`` names a platform that runs no batch jobs.
    """
    name = platform or use_case.config.serving.platform
    if name == IN_PROCESS:
        return None
    plugin = use_case.registry.load_platform(name, "serving")
    if hasattr(plugin, "run_transform_job"):
        return name
    if platform:
        raise TransformError(f"platform '{name}' runs no batch transform jobs: pass --platform {IN_PROCESS} (or no "
                             "--platform) to score in this process")
    return None


@dataclass
class _Request:
    """One request file of a job: its object name, the source it scores and how its answers map
    back (``whole``: one request for all the source's records; else one request per line)."""

    name: str
    source: Source
    whole: bool = False


def _record_body(record: Any) -> bytes:
    return orjson.dumps({"instances": record[None]}, option=orjson.OPT_SERIALIZE_NUMPY)


def _write_requests(sources: list[Source], folder: Path) -> list[_Request]:
    """Each source as ``<name>.jsonl`` of JSON request bodies, one per line (see the module doc)."""
    requests = []
    for source in sources:
        name = source.name if source.bodies else f"{source.name}.jsonl"
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            if source.bodies:
                handle.writelines(body + b"\n" for body in source.bodies)
            else:
                for start in range(0, source.count, 1024):
                    for record in source.slice(start, min(source.count, start + 1024)):
                        handle.write(_record_body(record) + b"\n")
        requests.append(_Request(name, source))
    return requests


def _answers(path: Path, request: _Request, expected: int) -> list[bytes]:
    if not path.is_file():
        raise TransformError(f"the batch job wrote no {request.name}.out for {request.name}: see its logs")
    answers = [line for line in path.read_bytes().splitlines() if line.strip()]
    if request.whole:
        answers = [b"".join(answers)] if answers else []
    if len(answers) != expected:
        raise TransformError(f"the batch job answered {len(answers)} of the {expected} request(s) of {request.name}: "
                             "see its logs")
    return answers


def _answer_lines(body: bytes, source: Source, index: int, line: int | None) -> tuple[list[bytes], int]:
    """The output lines of one answer and the next record index (see the module doc)."""
    from modelcycle.core.monitoring.records import record_ids

    def where(i: int) -> dict[str, Any]:
        fields: dict[str, Any] = {"source": source.name, "index": i}
        if line is not None:
            fields["line"] = line
        return fields

    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [orjson.dumps({"response": body.decode("utf-8", "replace"), **where(index)}) + b"\n"], index + 1
    blocks = document.get("predictions") if isinstance(document, dict) else None
    if isinstance(blocks, list) and len(blocks) == 1 and isinstance(blocks[0], dict) \
            and isinstance(blocks[0].get("values"), list):
        block = {key: value for key, value in blocks[0].items() if key != "values"}
        rows = blocks[0]["values"]
        ids = record_ids(uuid.uuid4().hex, len(rows))
        lines = [orjson.dumps({"predictions": [{**block, "values": [row]}], "scoring_id": ids[i], **where(index + i)})
                 + b"\n" for i, row in enumerate(rows)]
        return lines, index + len(rows)
    if isinstance(document, dict):
        return [orjson.dumps({**document, **where(index)}) + b"\n"], index + 1
    return [orjson.dumps({"response": document, **where(index)}) + b"\n"], index + 1


def _assemble(requests: list[_Request], outputs: Path, write: Any) -> int:
    """Write every request file's answers, in source order; returns the records written."""
    records = 0
    for request in requests:
        source = request.source
        expected = 1 if request.whole else len(source.bodies) or source.count
        index = 0
        for k, body in enumerate(_answers(outputs / f"{request.name}.out", request, expected)):
            line = source.lines[k] if source.bodies and source.lines else None
            lines, index = _answer_lines(body, source, index, line)
            for text in lines:
                write(text)
        records += index
    return records


def _sources(use_case: UseCaseView, schema: Any, input: Path | None, split: str | None,
             ) -> tuple[list[Source], list[InvalidRecord]]:
    if split is not None:
        from modelcycle.core.datasets import load_dataset

        dataset = load_dataset(use_case.config.data.dataset, settings=use_case.config.data)
        return [split_source(split, getattr(dataset, split).images, schema)], []
    return file_sources(Path(input), schema, None)  # type: ignore[arg-type]


def run_job(use_case: UseCaseView, platform: str, model_dir: Path, output: Path, input: Path | None,
            split: str | None, remote_input: str | None, skip_invalid: bool, refuse: Any,
            progress: Any) -> dict[str, Any]:
    """Score ``input`` (a local folder or file; ``remote_input`` the URI it was fetched from) or
    the data set's ``split`` as ``platform``'s batch job into ``output`` (see the module doc).

    Raises:
        TransformError: invalid inputs (without ``skip_invalid``: ``refuse(invalid)``), a job
            that did not answer every request.
    """
    import tempfile

    from modelcycle.core.artifacts import read_manifest
    from modelcycle.core.serving.codecs import JSON, NPY

    manifest = read_manifest(model_dir)
    sources, invalid = _sources(use_case, manifest.input_schema, input, split)
    if invalid and not skip_invalid:
        raise refuse(invalid)
    if not sources:
        raise TransformError("no valid records to score")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="modelcycle-job-") as tmp:
        scratch = Path(tmp)
        job_input: str | Path
        if remote_input and not invalid and all(s.bodies for s in sources):
            requests, job_input, content_type, split_type = [_Request(s.name, s) for s in sources], remote_input, JSON, "Line"
        elif remote_input and not invalid and not any(s.bodies for s in sources) and \
                all(s.name.lower().endswith(".npy") for s in sources):
            requests = [_Request(s.name, s, whole=True) for s in sources]
            job_input, content_type, split_type = remote_input, NPY, None
        else:
            requests = _write_requests(sources, scratch / "requests")
            job_input, content_type, split_type = scratch / "requests", JSON, "Line"
        (scratch / "outputs").mkdir()
        job = use_case.registry.call_platform(
            platform, "run_transform_job", name=use_case.config.name, model_dir=model_dir,
            settings=use_case.config.serving, work_dir=use_case.work_dir, input=job_input, content_type=content_type,
            split_type=split_type, directory=scratch / "outputs")
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
        try:
            with partial.open("wb") as handle:
                records = _assemble(requests, scratch / "outputs", handle.write)
            os.replace(partial, output)
        finally:
            partial.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    progress(records, records)
    return {
        "output": str(output), "records": records, "sources": [s.name for s in sources],
        "invalid": [str(record) for record in invalid], "seconds": seconds,
        "records_per_second": records / seconds if seconds > 0 else 0.0, "run_id": manifest.run_id,
        "model_dir": str(model_dir), "script": manifest.script is not None, "batch_size": None, "threads": None,
        "logged": 0, "deployment_id": None, "platform": platform, "job": job,
    }

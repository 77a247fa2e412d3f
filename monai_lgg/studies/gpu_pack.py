"""Pack what a bare GPU machine needs for ``tools/gpu_suite.py``, and unpack it there.

The GPU machine of this project (docs/performance.md, "GPU run") has Python 3.12 with torch (CUDA), numpy,
OpenCV, scikit-image, tifffile, tensorboard and pytest, but no monai, pytorch-ignite, nibabel or fire; it
cannot download anything, and each command carries at most 64 MiB (the repository's files included). So:

    python tools/gpu_pack.py build [--source ../shared/data/lgg/kaggle_3m] [--out gpu_pack]

here writes into ``gpu_pack/`` (git-ignored; the data must never be committed):

- ``wheels/``: the pure-Python wheels (``py3-none-any``) of monai, pytorch-ignite, nibabel, fire and
  termcolor, at the versions installed here (``pip download``; ``--wheels_from DIR`` copies them from a
  folder instead). itk is not needed on the suite's path (MONAI imports it optionally; monai_lgg never does).
- ``data.part_00`` ...: the converted data set (``monai-lgg convert``: per-patient NIfTI volumes,
  ``datalist.json`` with the folds) as one archive, split into parts that each fit one command beside the
  working tree. The uint8 image volumes travel as lossless WebP slices (the 3 channels of a slice in one
  image; 39 % smaller than the gzip NIfTI files for the 66 shared patients; every slice is checked to decode
  identically while packing); their NIfTI headers and every other file travel verbatim. On the machine every volume is
  rebuilt byte for byte (checked against the SHA-256 of its uncompressed NIfTI), with OpenCV and numpy only.
- ``manifest.json`` (sizes and SHA-256 of every part and wheel) and ``CALLS.md``: the exact sequence of device
  commands for this pack, each with the paths it carries.

On the GPU machine (each device command runs in a fresh copy of the repository, so the parts are moved into a
store that outlives the commands while the machine stays warm, ``~/monai_lgg_gpu`` or ``$MONAI_LGG_GPU_STORE``):

    python3 tools/gpu_pack.py stash gpu_pack      # after each call that carries a part: check it, move it to the store
    python3 tools/gpu_pack.py install gpu_pack    # stash, then install the wheels into <store>/site and, when every
                                                  # part is there, join, check and unpack the data into <store>/lgg

``install`` exits 0 when the wheels are installed, also when data parts are missing (the suite then uses
synthetic data and says so); it prints the ``PYTHONPATH`` to export.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from monai_lgg.io import atomic_dir, atomic_path, write_json  # standard library only, as this whole module
from monai_lgg.studies import PROJECT_ROOT as PROJECT

FORMAT = 1
MIB = 2**20
CALL_LIMIT = 64 * MIB  # what one device command may carry: working tree + carried paths
# Pure-Python packages the suite needs that the GPU machine lacks (termcolor: fire's only dependency).
WHEELS = ("monai", "pytorch-ignite", "nibabel", "fire", "termcolor")
PART_PREFIX = "data.part_"
SHARED_KAGGLE = PROJECT.parent / "shared" / "data" / "lgg" / "kaggle_3m"


def default_store() -> Path:
    """Where the machine keeps parts, wheels and data between commands.

    ``$MONAI_LGG_GPU_STORE``, else ``~/monai_lgg_gpu``.
    """
    return Path(os.environ.get("MONAI_LGG_GPU_STORE", Path.home() / "monai_lgg_gpu")).expanduser()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------- sizes
def travelling_tree_bytes(root: Path = PROJECT) -> int:
    """Bytes of what a device command sends besides carried paths: tracked and untracked-not-ignored files."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    total = 0
    for name in {n for n in out.decode().split("\0") if n}:
        try:
            total += os.lstat(root / name).st_size
        except FileNotFoundError:  # deleted in the work tree, still in the index
            pass
    return total


def part_sizes(total: int, capacity: int, last_capacity: int) -> list[int]:
    """Split ``total`` bytes into the fewest parts: each at most ``capacity``, the last (which travels with the
    wheels) at most ``last_capacity``; the others as even as possible.

    Raises:
        ValueError: a call has no room left for data.
    """
    if last_capacity <= 0 or capacity <= 0:
        raise ValueError(f"no room for data in a call (capacity {capacity} B, last call {last_capacity} B)")
    if total <= last_capacity:
        return [total]
    count = 1 + math.ceil((total - last_capacity) / capacity)
    last = min(last_capacity, total // count)
    rest = total - last
    size = math.ceil(rest / (count - 1))
    sizes = [size] * (count - 2) + [rest - size * (count - 2), last]
    assert sum(sizes) == total and max(sizes[:-1]) <= capacity and sizes[-1] <= last_capacity
    return sizes


# --------------------------------------------------------------------------------------------- wheels
def gather_wheels(target: Path, wheels_from: Path | None = None) -> list[dict]:
    """Download (or copy) the pure-Python wheels of :data:`WHEELS` at the versions installed here."""
    from importlib.metadata import version

    target.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={version(name)}" for name in WHEELS]
    if wheels_from is not None:
        for wheel in sorted(Path(wheels_from).glob("*.whl")):
            shutil.copy2(wheel, target / wheel.name)
    else:
        platforms = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any"]
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            "-d",
            str(target),
            *pins,
        ]
        for platform in platforms:
            command[command.index("-d") : command.index("-d")] = ["--platform", platform]
        subprocess.run(command, check=True)
    found = sorted(target.glob("*.whl"))
    records = []
    for name in WHEELS:
        stem = name.replace("-", "_").lower()
        matches = [w for w in found if w.name.lower().startswith(stem + "-")]
        if len(matches) != 1:
            found_names = [w.name for w in matches]
            raise SystemExit(f"gpu_pack: error: {target}: expected one wheel of {name}, found {found_names}")
        wheel = matches[0]
        if not wheel.name.endswith("-none-any.whl"):
            raise SystemExit(f"gpu_pack: error: {wheel}: not a pure-Python wheel (the GPU machine runs Python 3.12)")
        records.append({"name": wheel.name, "bytes": wheel.stat().st_size, "sha256": sha256_file(wheel)})
    extra = sorted({w.name for w in found} - {r["name"] for r in records})
    if extra:
        raise SystemExit(f"gpu_pack: error: {target}: unexpected wheels {extra} (two versions stop the install)")
    return records


# --------------------------------------------------------------------------------------------- data: encode
def _converted(source: Path, workdir: Path) -> Path:
    """A converted data set: ``source`` itself when it has ``datalist.json``, else ``source`` (kaggle_3m) converted."""
    if (source / "datalist.json").is_file():
        return source
    from monai_lgg.data.kaggle import convert_kaggle

    print(f"converting {source} (monai-lgg convert) ...", flush=True)
    result = convert_kaggle(source, workdir / "lgg", progress=False)
    if not result.ok:
        raise SystemExit(f"gpu_pack: error: {source}: conversion failed: {result.report['errors'][:1]}")
    return workdir / "lgg"


def _image_groups(root: Path) -> list[list[str]]:
    """Each case's image files (relative paths), from ``datalist.json`` (every list in it)."""
    datalist = json.loads((root / "datalist.json").read_text())
    groups = []
    for items in datalist.values():
        if isinstance(items, list):
            for item in items:
                image = item.get("image") if isinstance(item, dict) else None
                files = image if isinstance(image, list) else [image] if isinstance(image, str) else []
                if files and all(isinstance(f, str) and f.endswith(".nii.gz") for f in files):
                    groups.append(files)
    return groups


def encode_group(root: str, files: Sequence[str]) -> tuple[dict, bytes, bytes] | None:
    """One case's image volumes as lossless WebP slices (up to 3 channels per image) plus their NIfTI headers.

    Returns ``None`` when the files are not plain uint8 3D volumes of one shape (they then travel verbatim).
    """
    import cv2
    import nibabel as nib
    import numpy as np

    if not 1 <= len(files) <= 3:
        return None
    volumes, headers, records = [], [], []
    for name in files:
        path = Path(root) / name
        raw = gzip.decompress(path.read_bytes())
        image = nib.load(str(path))
        volume = np.asarray(image.dataobj)
        offset = int(image.dataobj.offset)
        payload = volume.tobytes(order="F")
        if volume.dtype != np.uint8 or volume.ndim != 3 or raw[offset:] != payload:
            return None  # scaled, other type, or extra bytes: not rebuilt from pixels
        if volumes and volume.shape != volumes[0].shape:
            return None
        volumes.append(volume)
        headers.append(raw[:offset])
        records.append(
            {"path": name, "offset": offset, "shape": list(volume.shape), "sha256": hashlib.sha256(raw).hexdigest()}
        )
    rows, columns, depth = volumes[0].shape
    blank = np.zeros((rows, columns), np.uint8)
    slices, sizes = [], []
    for k in range(depth):
        channels = [v[:, :, k] for v in volumes] + [blank] * (3 - len(volumes))
        pixels = np.ascontiguousarray(np.stack(channels, axis=-1))
        ok, encoded = cv2.imencode(".webp", pixels, [cv2.IMWRITE_WEBP_QUALITY, 101])  # > 100: lossless
        if not ok or not np.array_equal(cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED), pixels):
            raise RuntimeError(f"{files[0]}: slice {k} does not survive lossless WebP")
        slices.append(encoded.tobytes())
        sizes.append(len(slices[-1]))
    index = {"files": records, "header_bytes": [len(h) for h in headers], "slice_bytes": sizes}
    return index, b"".join(headers), b"".join(slices)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size, member.mode, member.mtime = len(data), 0o644, 0
    tar.addfile(member, io.BytesIO(data))


def write_archive(root: Path, archive: Path, workers: int) -> dict:
    """Write the data archive of the converted set ``root``: encoded image groups plus every other file verbatim."""
    groups = _image_groups(root)
    encoded: set[str] = set()
    stats = {"groups": 0, "verbatim_files": 0, "slices": 0}
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        with ProcessPoolExecutor(max(1, workers)) as pool:
            results = pool.map(encode_group, [str(root)] * len(groups), groups, chunksize=1)
            for g, (files, result) in enumerate(zip(groups, results, strict=True)):
                if result is None:
                    continue
                index, headers, slices = result
                _add(tar, f"encoded/{g:05d}.json", json.dumps(index).encode())
                _add(tar, f"encoded/{g:05d}.hdr", headers)
                _add(tar, f"encoded/{g:05d}.webp", slices)
                encoded.update(files)
                stats["groups"] += 1
                stats["slices"] += len(index["slice_bytes"])
                if (g + 1) % 10 == 0:
                    print(f"  encoded {g + 1}/{len(groups)} cases", flush=True)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            relative = path.relative_to(root).as_posix()
            if relative not in encoded:
                _add(tar, f"lgg/{relative}", path.read_bytes())
                stats["verbatim_files"] += 1
    return stats


def split_file(path: Path, sizes: Sequence[int], out: Path) -> list[dict]:
    """Cut ``path`` into consecutive parts of ``sizes`` bytes named ``data.part_NN`` in ``out``."""
    parts = []
    with open(path, "rb") as f:
        for i, size in enumerate(sizes):
            name = f"{PART_PREFIX}{i:02d}"
            data = f.read(size)
            with atomic_path(out / name) as tmp:
                tmp.write_bytes(data)
            parts.append({"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        if f.read(1):
            raise RuntimeError("the parts do not cover the archive")
    return parts


# --------------------------------------------------------------------------------------------- the calls
SUITE_COMMAND = (
    "python3 tools/gpu_pack.py install {pack} && export PYTHONPATH=$PWD:$HOME/monai_lgg_gpu/site PYTHONUNBUFFERED=1 && "
    "python3 tools/gpu_suite.py $OUT --data $HOME/monai_lgg_gpu/lgg --work_dir $HOME/monai_lgg_gpu/work "
    "2>&1 | tee $OUT/suite.log"
)


def device_calls(pack: str, parts: Sequence[dict], manifest: str = "manifest.json") -> list[dict]:
    """The device commands for a pack: one per part (carrying it and the manifest); the last also carries the
    wheels, installs everything and runs the suite."""
    calls = []
    for i, part in enumerate(parts):
        carry = [f"{pack}/{manifest}", f"{pack}/{part['name']}"]
        command = f"python3 tools/gpu_pack.py stash {pack}"
        if i == len(parts) - 1:
            carry.append(f"{pack}/wheels")
            command = SUITE_COMMAND.format(pack=pack)
        calls.append({"carry": carry, "command": command, "timeout_s": 600 if i == len(parts) - 1 else 120})
    return calls


def calls_markdown(calls: Sequence[dict], manifest: dict) -> str:
    lines = [
        "# Device commands for this pack",
        "",
        f"Pack of {manifest['created']}: {len(manifest['parts'])} data part(s), "
        f"{manifest['archive_bytes'] / MIB:.1f} MiB of data, "
        f"{sum(w['bytes'] for w in manifest['wheels']) / MIB:.1f} MiB of wheels; working tree "
        f"{manifest['tree_bytes'] / MIB:.1f} MiB when packed. Issue the calls back to back: the machine is given back",
        "after about 30 s idle, and the parts stashed so far go with it (the last call then runs the suite on",
        "synthetic data and says so).",
        "",
    ]
    for i, call in enumerate(calls, 1):
        size = sum(manifest["part_bytes"].get(Path(c).name, 0) for c in call["carry"])
        if any(c.endswith("/wheels") for c in call["carry"]):
            size += sum(w["bytes"] for w in manifest["wheels"])
        lines += [
            f"{i}. run(command={json.dumps(call['command'])},",
            f"       carry={json.dumps(call['carry'])}, timeout_s={call['timeout_s']})"
            f"  # carries {size / MIB:.1f} MiB + the tree",
        ]
    return "\n".join(lines) + "\n"


def _pack_path(out: Path) -> str:
    """``out`` as the device commands name it: relative to the repository root (where they run)."""
    try:
        return out.resolve().relative_to(PROJECT).as_posix()
    except ValueError:
        return out.name  # outside the repository: the commands assume it is copied to <repo>/<name>


def _check_ignored(out: Path) -> None:
    """Refuse a pack folder inside the repository that git would track: the data must never be committed."""
    try:
        out.resolve().relative_to(PROJECT)
    except ValueError:
        return
    probe = out / "manifest.json"
    if subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=PROJECT).returncode != 0:
        raise SystemExit(
            f"gpu_pack: error: {out}: not ignored by git; add it to .gitignore (the data must never be committed)"
        )


def build(args: argparse.Namespace) -> None:
    out = Path(args.out)
    _check_ignored(out)
    source = Path(args.source) if args.source != "auto" else SHARED_KAGGLE
    if not source.is_dir():
        raise SystemExit(f"gpu_pack: error: {source}: not found (give --source a kaggle_3m or converted folder)")
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob(f"{PART_PREFIX}*")) + [out / "manifest.json", out / "CALLS.md"]:
        old.unlink(missing_ok=True)
    shutil.rmtree(out / "wheels", ignore_errors=True)
    wheels_from = Path(args.wheels_from) if args.wheels_from else None
    wheels = [] if args.no_wheels else gather_wheels(out / "wheels", wheels_from)
    wheel_bytes = sum(w["bytes"] for w in wheels)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        root = _converted(source, Path(tmp))
        archive = Path(tmp) / "data.tar"
        print(f"packing {root} ...", flush=True)
        stats = write_archive(root, archive, args.workers)
        total = archive.stat().st_size
        tree = travelling_tree_bytes() if args.tree_mib is None else int(args.tree_mib * MIB)
        manifest_room = 64 * 1024
        if args.part_mib:
            capacity = last_capacity = int(args.part_mib * MIB)
        else:
            capacity = CALL_LIMIT - tree - int(args.margin_mib * MIB) - manifest_room
            last_capacity = capacity - wheel_bytes
        sizes = part_sizes(total, capacity, last_capacity)
        parts = split_file(archive, sizes, out)
        archive_sha = sha256_file(archive)
    manifest = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": str(source),
        "archive_bytes": total,
        "archive_sha256": archive_sha,
        "parts": parts,
        "part_bytes": {p["name"]: p["bytes"] for p in parts},
        "wheels": wheels,
        "tree_bytes": tree,
        "data": stats,
    }
    manifest["calls"] = device_calls(_pack_path(out), parts)
    write_json(out / "manifest.json", manifest)
    with atomic_path(out / "CALLS.md") as tmp_calls:
        tmp_calls.write_text(calls_markdown(manifest["calls"], manifest))
    worst = max(tree + p["bytes"] + (wheel_bytes if i == len(parts) - 1 else 0) for i, p in enumerate(parts))
    part_list = ", ".join(f"{p['bytes'] / MIB:.1f}" for p in parts)
    print(
        f"{stats['groups']} cases ({stats['slices']} slices) as WebP, {stats['verbatim_files']} files verbatim: "
        f"{total / MIB:.1f} MiB in {len(parts)} part(s) of {part_list} MiB; "
        f"wheels {wheel_bytes / MIB:.1f} MiB; tree {tree / MIB:.1f} MiB; largest call {worst / MIB:.1f} MiB of 64"
    )
    if worst > CALL_LIMIT:
        print("gpu_pack: warning: a call would exceed 64 MiB; rebuild with a smaller --part_mib", file=sys.stderr)
    print((out / "CALLS.md").read_text())


# --------------------------------------------------------------------------------------------- machine side
def _manifest(pack: Path, store: Path) -> dict:
    for folder in (pack, store):
        if (folder / "manifest.json").is_file():
            return json.loads((folder / "manifest.json").read_text())
    raise SystemExit(f"gpu_pack: error: {pack / 'manifest.json'}: not found (carry it with every call)")


def stash(pack: Path, store: Path) -> dict:
    """Check the parts and wheels carried in ``pack`` against the manifest and move them into ``store``."""
    manifest = _manifest(pack, store)
    (store / "parts").mkdir(parents=True, exist_ok=True)
    if (pack / "manifest.json").is_file():
        shutil.copy2(pack / "manifest.json", store / "manifest.json")
    for part in manifest["parts"]:
        carried = pack / part["name"]
        if carried.is_file():
            if carried.stat().st_size != part["bytes"] or sha256_file(carried) != part["sha256"]:
                raise SystemExit(f"gpu_pack: error: {carried}: size or SHA-256 differs from the manifest (re-send it)")
            shutil.move(str(carried), store / "parts" / part["name"])
    if (pack / "wheels").is_dir():
        (store / "wheels").mkdir(exist_ok=True)
        for wheel in manifest["wheels"]:
            carried = pack / "wheels" / wheel["name"]
            if carried.is_file():
                if sha256_file(carried) != wheel["sha256"]:
                    raise SystemExit(f"gpu_pack: error: {carried}: SHA-256 differs from the manifest")
                shutil.copy2(carried, store / "wheels" / wheel["name"])
    present = [p["name"] for p in manifest["parts"] if (store / "parts" / p["name"]).is_file()]
    missing = [p["name"] for p in manifest["parts"] if p["name"] not in present]
    print(
        f"store {store}: {len(present)} of {len(manifest['parts'])} data parts"
        + (f" (missing: {', '.join(missing)})" if missing else " (complete)"),
        flush=True,
    )
    return {"manifest": manifest, "missing": missing}


def install_wheels(manifest: dict, store: Path) -> bool:
    """``pip install --no-index --no-deps --target <store>/site`` the wheels (once), then check the imports."""
    site, marker = store / "site", store / "site" / ".installed.json"
    names = sorted(w["sha256"] for w in manifest["wheels"])
    wheels = [store / "wheels" / w["name"] for w in manifest["wheels"]]
    if marker.is_file() and json.loads(marker.read_text()) == names:
        print(f"wheels already installed in {site}")
    else:
        if not wheels or not all(w.is_file() for w in wheels):
            print(f"gpu_pack: error: wheels missing in {store / 'wheels'} (carry gpu_pack/wheels)", file=sys.stderr)
            return False
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--no-cache-dir",
            "--upgrade",
            "--target",
            str(site),
            *map(str, wheels),
        ]
        if subprocess.run(command).returncode != 0:
            return False
        write_json(marker, names)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(PROJECT)])}
    check = (
        "import importlib.metadata as m, monai, ignite, nibabel, fire, monai_lgg.engines; "
        "names = ('monai', 'pytorch-ignite', 'nibabel', 'fire'); "
        "print('imports ok:', ', '.join(f'{n} {m.version(n)}' for n in names))"
    )
    return subprocess.run([sys.executable, "-c", check], env=env).returncode == 0


def _joined(store: Path, parts: Sequence[dict]) -> Iterator[bytes]:
    for part in parts:
        with open(store / "parts" / part["name"], "rb") as f:
            yield from iter(lambda f=f: f.read(8 * MIB), b"")


def decode_group(index: dict, headers: bytes, slices: bytes) -> list[tuple[str, bytes]]:
    """Rebuild one case's ``.nii.gz`` files from :func:`encode_group`'s output, checking each file's SHA-256."""
    import cv2
    import numpy as np

    rows, columns, depth = index["files"][0]["shape"]
    volume = np.empty((len(index["files"]), rows, columns, depth), np.uint8)
    offset = 0
    for k, size in enumerate(index["slice_bytes"]):
        pixels = cv2.imdecode(np.frombuffer(slices, np.uint8, size, offset), cv2.IMREAD_UNCHANGED)
        volume[:, :, :, k] = np.moveaxis(pixels[:, :, : len(index["files"])], -1, 0)
        offset += size
    out, start = [], 0
    for c, (record, length) in enumerate(zip(index["files"], index["header_bytes"], strict=True)):
        raw = headers[start : start + length] + volume[c].tobytes(order="F")
        start += length
        if hashlib.sha256(raw).hexdigest() != record["sha256"]:
            raise RuntimeError(f"{record['path']}: rebuilt volume differs from the packed one")
        out.append((record["path"], gzip.compress(raw, compresslevel=1, mtime=0)))
    return out


def _safe(root: Path, name: str) -> Path:
    path = (root / name).resolve()
    if not path.is_relative_to(root.resolve()):
        raise RuntimeError(f"unsafe path in the archive: {name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def unpack_data(manifest: dict, store: Path, workers: int) -> Path:
    """Join the parts (checking the archive's SHA-256), then rebuild the converted data set into ``<store>/lgg``."""
    target, marker = store / "lgg", store / "lgg" / ".pack.json"
    if marker.is_file() and json.loads(marker.read_text()).get("archive_sha256") == manifest["archive_sha256"]:
        print(f"data already unpacked in {target}")
        return target
    digest = hashlib.sha256()
    joined = store / "data.tar"
    with open(joined, "wb") as f:
        for block in _joined(store, manifest["parts"]):
            digest.update(block)
            f.write(block)
    if digest.hexdigest() != manifest["archive_sha256"]:
        raise SystemExit("gpu_pack: error: the joined parts differ from the packed archive (SHA-256)")
    groups: dict[str, dict] = {}
    written = 0
    with atomic_dir(target) as tmp, tarfile.open(joined) as tar, ProcessPoolExecutor(max(1, workers)) as pool:
        for member in tar:
            data = tar.extractfile(member).read() if member.isfile() else None
            if data is None:
                continue
            if member.name.startswith("lgg/"):
                _safe(tmp, member.name[4:]).write_bytes(data)
                written += 1
            elif member.name.startswith("encoded/"):
                stem, suffix = member.name.rsplit(".", 1)
                groups.setdefault(stem, {})[suffix] = json.loads(data) if suffix == "json" else data
        futures = [pool.submit(decode_group, g["json"], g["hdr"], g["webp"]) for g in groups.values()]
        for future in futures:
            for name, data in future.result():
                _safe(tmp, name).write_bytes(data)
                written += 1
        write_json(tmp / ".pack.json", {"archive_sha256": manifest["archive_sha256"], "files": written})
    joined.unlink()
    print(f"data unpacked into {target}: {written} files, {len(groups)} cases rebuilt from WebP and checked")
    return target


def install(pack: Path, store: Path, workers: int) -> int:
    state = stash(pack, store)
    if not install_wheels(state["manifest"], store):
        print("gpu_pack: error: the wheels could not be installed; the suite cannot run", file=sys.stderr)
        return 1
    if state["missing"]:
        print(
            f"gpu_pack: warning: data incomplete ({len(state['missing'])} part(s) missing): the suite will use "
            "synthetic data and skip the accuracy run",
            file=sys.stderr,
        )
    else:
        unpack_data(state["manifest"], store, workers)
    print(f"export PYTHONPATH={PROJECT}{os.pathsep}{store / 'site'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="here: wheels + data parts + manifest + CALLS.md")
    b.add_argument("--source", default="auto", help="kaggle_3m folder or converted folder (auto: the shared copy)")
    b.add_argument("--out", default=str(PROJECT / "gpu_pack"), help="pack folder (git-ignored)")
    b.add_argument("--part_mib", type=float, default=None, help="fixed part size (default: fit each call in 64 MiB)")
    b.add_argument("--margin_mib", type=float, default=4.0, help="room left in each call for the tree to grow")
    b.add_argument("--tree_mib", type=float, default=None, help="working-tree size to plan for (default: measured)")
    b.add_argument("--workers", type=int, default=2, help="encoding processes")
    b.add_argument("--wheels_from", default=None, help="copy the wheels from this folder instead of pip download")
    b.add_argument("--no_wheels", action="store_true", help="data only")
    for name, text in (
        ("stash", "machine: move carried parts into the store"),
        ("install", "machine: stash, install wheels, join and unpack the data"),
    ):
        c = commands.add_parser(name, help=text)
        c.add_argument("pack", help="the carried pack folder (gpu_pack)")
        c.add_argument("--store", default=None, help="default: $MONAI_LGG_GPU_STORE or ~/monai_lgg_gpu")
        c.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1), help="decoding processes")
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args)
        return 0
    store = Path(args.store).expanduser() if args.store else default_store()
    if args.command == "stash":
        stash(Path(args.pack), store)
        return 0
    return install(Path(args.pack), store, args.workers)

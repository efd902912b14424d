"""``spoofwatch data prepare-la``: download LA.zip (resumable), extract, verify.

The archive unpacks to ``LA/ASVspoof2019_LA_{train,dev,eval}/flac/*.flac``
with the CM protocols in ``LA/ASVspoof2019_LA_cm_protocols/``. Verification
checks every protocol utterance has its file and reports counts per split.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from spoofwatch.errors import DatasetError

log = logging.getLogger(__name__)

#: Public address of the ASVspoof 2019 LA archive (ODC-By, the ASVspoof consortium).
LA_URL = "https://datashare.ed.ac.uk/bitstream/handle/10283/3336/LA.zip"
SPLITS = {"train": "trn", "dev": "trl", "eval": "trl"}
_CHUNK = 1 << 20


def protocol_path(la_root: Path, split: str) -> Path:
    return la_root / "ASVspoof2019_LA_cm_protocols" / f"ASVspoof2019.LA.cm.{split}.{SPLITS[split]}.txt"


def flac_dir(la_root: Path, split: str) -> Path:
    return la_root / f"ASVspoof2019_LA_{split}" / "flac"


def download_resumable(url: str, dest: Path, progress: bool = True) -> Path:
    """Download to ``dest``, continuing a previous partial download with an HTTP Range request."""
    from tqdm import tqdm

    partial = dest.with_name(dest.name + ".partial")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch
            partial.replace(dest)
            return dest
        raise DatasetError(f"downloading {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DatasetError(f"downloading {url}: {exc}") from None
    with response:
        resumed = response.status == 206
        if have and not resumed:
            log.info("server ignored the Range request; restarting the download")
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        with (
            partial.open("ab" if resumed else "wb") as fh,
            tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, disable=not progress
            ) as bar,
        ):
            for block in iter(lambda: response.read(_CHUNK), b""):
                fh.write(block)
                bar.update(len(block))
    if total is not None and partial.stat().st_size != total:
        raise DatasetError(
            f"downloading {url}: got {partial.stat().st_size} of {total} bytes; rerun to resume"
        )
    partial.replace(dest)
    return dest


def extract(archive: Path, dest: Path) -> Path:
    """Unzip and return the ``LA`` folder."""
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise DatasetError(f"{archive}: corrupt member {bad}; delete it and download again")
            names = zf.namelist()
            if not any(n.startswith("LA/ASVspoof2019_LA_cm_protocols/") for n in names):
                raise DatasetError(
                    f"{archive}: expected the LA layout (LA/ASVspoof2019_LA_cm_protocols/ ...), found {names[:3]}"
                )
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise DatasetError(
            f"{archive}: not a complete zip archive ({exc}); it may be truncated: delete it and download again"
        ) from None
    return dest / "LA"


@dataclass(frozen=True)
class SplitReport:
    split: str
    expected: int
    present: int
    missing: list[str]


def verify_la(la_root: Path) -> list[SplitReport]:
    """Check each split present against its protocol."""
    from spoofwatch.calibration.protocol import parse_protocol

    reports = []
    for split in SPLITS:
        proto = protocol_path(la_root, split)
        if not proto.is_file():
            raise DatasetError(f"{la_root}: missing protocol {proto.relative_to(la_root)}")
        trials = parse_protocol(proto)
        folder = flac_dir(la_root, split)
        missing = [t.utt for t in trials if not (folder / f"{t.utt}.flac").is_file()]
        reports.append(SplitReport(split, len(trials), len(trials) - len(missing), missing))
    return reports


def prepare_la(source: str | None, dest: Path, progress: bool = True) -> tuple[Path, list[SplitReport]]:
    source = source or LA_URL
    if "://" in source:
        archive = download_resumable(source, dest / "LA.zip", progress)
    else:
        archive = Path(source)
        if not archive.is_file():
            raise DatasetError(f"{source}: no such archive")
    la_root = extract(archive, dest)
    return la_root, verify_la(la_root)

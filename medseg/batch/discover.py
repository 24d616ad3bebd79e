"""Find every case under INPUT_DIR: image files and DICOM series (one case per series).

* NIfTI (``.nii``, ``.nii.gz``, ``.hdr``), NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``)
  files are one case each (whether they are readable is found out when the case runs, so a broken
  file becomes a failed row, not a crash of the batch).
* DICOM files are grouped by SeriesInstanceUID over the **whole** tree, so a series is one case
  wherever its files sit (one folder, several folders, or several series in one folder). The series is
  then listed by :func:`medseg.io.dicom.scan_dicom` in the smallest folder holding all its files, which
  also splits a UID that mixes orientations/matrix sizes into sub-series (``<UID>.s1``...): one case each.
  Non-image objects (SEG, RTSTRUCT, ...) are skipped with a note.
* ``.zip`` archives are scanned as DICOM containers: one case per image series inside.
* Hidden files and folders (leading dot) and OUTPUT_DIR (when it lies inside INPUT_DIR) are skipped;
  symlinked folders are followed once (loop-safe).
* **Every input found is accounted for** (:attr:`Discovery.entries`): a file that is not an image (a
  ``.txt``, a data file of a header, a DICOM SEG...) is a ``skipped`` entry with its reason; a DICOM file
  or series that cannot be read is a ``failed`` entry, never silently dropped.
* A symlink (file or folder) whose target lies outside INPUT_DIR is not followed unless
  ``follow_outside_links`` is set; either way it is reported (an entry when not followed, a note on each
  case read through it when followed).
"""

from __future__ import annotations

import logging
import os
import stat
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path, PurePosixPath

from medseg.errors import MedsegError, ReadError
from medseg.batch.naming import series_label

__all__ = [
    "CaseFilter", "filter_cases", "group_channel_files", "CaseKind", "Case", "Discovery", "Entry", "discover_cases", "IMAGE_SUFFIXES",
]

log = logging.getLogger(__name__)

#: file suffixes (lower case) read as one volume each
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".hdr", ".nrrd", ".nhdr", ".mha", ".mhd")
#: suffixes that are never DICOM (data files of the formats above, common side files)
_NOT_DICOM = (
    ".img", ".img.gz", ".raw", ".zraw", ".json", ".txt", ".csv", ".tsv", ".md", ".xml", ".html", ".pdf",
    ".png", ".jpg", ".jpeg", ".bval", ".bvec", ".py", ".yaml", ".yml", ".ctbl", ".tar", ".gz",
)


class CaseKind(str, Enum):
    FILE = "file"  # one NIfTI/NRRD/MetaImage file
    DICOM = "dicom"  # one DICOM series (files in a folder tree, or inside a zip)


@dataclass(frozen=True)
class Case:
    """One unit of work of a batch.

    Args:
        key: unique, stable identity (``file:<rel path>``, ``dicom:<series id>``, ``zip:<rel>#<id>``).
        kind: file or DICOM series.
        path: what :func:`medseg.io.read` opens (the file; the folder or zip holding the series).
        series: the series id to pass as ``read(..., series=)`` (DICOM), else ``None``.
        rel: ``path`` relative to INPUT_DIR (POSIX); for a DICOM folder ``"."`` is INPUT_DIR itself.
        series_label: readable series name for the output file (``"s003_CT_abdomen"``); ``None`` for files.
        description: what the summary's ``series`` column shows (``"#3 CT abdomen <UID>"``).
        problem: known before reading why this case cannot be read (it then fails with this message).
    """

    key: str
    kind: CaseKind
    path: Path
    series: str | None
    rel: PurePosixPath
    series_label: str | None = None
    description: str | None = None
    problem: str | None = None
    note: str | None = None  # e.g. read through a symlink leaving INPUT_DIR (shown in the summary)
    #: an nnU-Net case (``CASE_0000 .. CASE_000N``, :func:`group_channel_files`): its files in channel order
    channel_files: tuple[Path, ...] = ()

    @property
    def naming_rel(self) -> PurePosixPath:
        """The path its output is named from: ``rel``, or ``folder/CASE.nii.gz`` for an nnU-Net case."""
        if not self.channel_files:
            return self.rel
        from medseg.channels import NNUNET_CHANNEL

        m = NNUNET_CHANNEL.match(self.rel.name)
        return self.rel.with_name(m.group("case") + m.group("suffix")) if m else self.rel

    @property
    def display(self) -> str:
        """Input as shown in logs and the summary: the relative path (plus series for DICOM)."""
        return str(self.rel) if self.series is None else f"{self.rel} [{self.description or self.series}]"


@dataclass(frozen=True)
class Entry:
    """An input that is not a case: ``status`` is ``"skipped"`` or ``"failed"``, ``reason`` one line."""

    rel: str
    status: str
    reason: str

    @property
    def key(self) -> str:
        return f"input:{self.rel}"


@dataclass
class Discovery:
    """Cases found (sorted by key), the other inputs found (skipped/failed entries) and log notes."""

    cases: list[Case]
    notes: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)


def _suffix(name: str) -> str:
    low = name.lower()
    for double in (".nii.gz", ".img.gz", ".tar.gz"):
        if low.endswith(double) and len(low) > len(double):
            return double
    return os.path.splitext(low)[1]


def _inside(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


@dataclass
class _Walk:
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    via_link: dict[Path, str] = field(default_factory=dict)  # file -> note (reached through an outside link)


def _walk(root: Path, exclude: list[Path], follow_outside_links: bool = False) -> _Walk:
    """Regular, non-hidden files under ``root`` (sorted), following symlinked folders once; every other
    entry (hidden, special, unreadable, a link leaving ``root``) becomes an :class:`Entry`."""
    out = _Walk()
    seen_dirs: set[str] = set()
    excluded = {os.path.realpath(e) for e in exclude}
    root_real = os.path.realpath(root)
    link_of: dict[str, str] = {}  # walked dirpath -> note of the outside link it was reached through

    def rel(p: str) -> str:
        return str(_rel(root, Path(p)))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=lambda e: out.entries.append(
            Entry(rel(e.filename or str(root)), "failed", f"cannot list folder: {e.strerror or e}"))):
        real = os.path.realpath(dirpath)
        if real in seen_dirs or real in excluded:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        inherited = next((n for d, n in link_of.items() if dirpath == d or dirpath.startswith(d + os.sep)), None)
        keep = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if d.startswith("."):
                out.entries.append(Entry(rel(full) + "/", "skipped", "hidden folder"))
                continue
            if os.path.islink(full):
                target = os.path.realpath(full)
                if not _inside(target, root_real):
                    if not follow_outside_links:
                        out.entries.append(Entry(rel(full) + "/", "skipped", f"symlink leaves the input folder "
                                                 f"(-> {target}); not followed (--follow-outside-symlinks reads it)"))
                        continue
                    link_of[full] = f"read through symlink {rel(full)} -> {target} (outside the input folder, followed)"
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if name.startswith("."):
                out.entries.append(Entry(rel(full), "skipped", "hidden file"))
                continue
            note = inherited
            if os.path.islink(full):
                target = os.path.realpath(full)
                if not _inside(target, root_real):
                    if not follow_outside_links:
                        out.entries.append(Entry(rel(full), "skipped", f"symlink leaves the input folder (-> "
                                                 f"{target}); not followed (--follow-outside-symlinks reads it)"))
                        continue
                    note = f"read through symlink {rel(full)} -> {target} (outside the input folder, followed)"
            try:
                st = os.stat(full)
            except OSError as err:
                out.entries.append(Entry(rel(full), "failed", f"cannot read: {err.strerror or err}"))
                continue
            if stat.S_ISREG(st.st_mode):  # an empty image file is still a case (it fails clearly)
                out.files.append(Path(full))
                if note:
                    out.via_link[Path(full)] = note
            else:
                out.entries.append(Entry(rel(full), "skipped", "not a regular file"))
    return out


def _series_key(path: Path) -> tuple[str, str] | None:
    """``("uid", SeriesInstanceUID)`` of a DICOM file, ``("nouid", "<number>|<description>")`` when it has
    no UID (the reader groups those by series number and description), or None when it is not DICOM."""
    from medseg.io.dicom_files import looks_like_dicom

    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as err:
        return ("bad", f"cannot read: {err.strerror or err}")
    if not looks_like_dicom(head):
        return None
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(
                path, stop_before_pixels=True, force=True,
                specific_tags=["SeriesInstanceUID", "SeriesNumber", "SeriesDescription"],
            )
        uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        if uid:
            return ("uid", uid)
        number = ds.get("SeriesNumber")
        number = "" if number in (None, "") else str(int(number))
        return ("nouid", f"{number}|{str(ds.get('SeriesDescription', '') or '').strip()}")
    except Exception as err:  # noqa: BLE001 - any parse failure: an unreadable DICOM file (a failed entry)
        first = (str(err).splitlines() or [""])[0][:200]
        return ("bad", f"unreadable DICOM file: {type(err).__name__}: {first}")


def _common_dir(paths: list[Path]) -> Path:
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


def _rel(root: Path, path: Path) -> PurePosixPath:
    try:
        return PurePosixPath(Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix())
    except ValueError:  # reached through a symlink pointing outside: name it by its link path
        return PurePosixPath(path.name)


def _describe(info) -> str:  # noqa: ANN001 - SeriesInfo
    bits = []
    if info.number is not None:
        bits.append(f"#{info.number}")
    if info.description:
        bits.append(str(info.description))
    bits.append(info.uid or "?")
    return " ".join(bits)


def discover_cases(
    input_dir: str | os.PathLike[str], exclude: list[Path] | None = None, follow_outside_links: bool = False
) -> Discovery:
    """Every case under ``input_dir`` (see the module doc), sorted by key.

    Args:
        input_dir: folder to search recursively.
        exclude: folders to skip (e.g. OUTPUT_DIR inside INPUT_DIR).
        follow_outside_links: read through symlinks whose target lies outside ``input_dir``.

    Raises:
        ReadError: ``input_dir`` is missing or not a folder.

    >>> d = discover_cases("scans")          # doctest: +SKIP
    >>> [c.display for c in d.cases]         # doctest: +SKIP
    ['a/t1.nii.gz', 'ct [#3 Abdomen 1.2.840...]']
    """
    root = Path(input_dir).expanduser()
    if not root.is_dir():
        raise ReadError("input is not a folder" if root.exists() else "no such folder", root)
    walked = _walk(root, list(exclude or []), follow_outside_links)
    files, notes, entries = walked.files, walked.notes, walked.entries

    cases: list[Case] = []
    by_uid: dict[str, list[Path]] = defaultdict(list)
    no_uid: dict[str, list[Path]] = defaultdict(list)
    zips: list[Path] = []
    for f in files:
        suffix = _suffix(f.name)
        if suffix in IMAGE_SUFFIXES:
            rel = _rel(root, f)
            cases.append(Case(key=f"file:{rel}", kind=CaseKind.FILE, path=f, series=None, rel=rel,
                              note=walked.via_link.get(f)))
            continue
        if suffix == ".zip":
            zips.append(f)
            continue
        if suffix in _NOT_DICOM:
            entries.append(Entry(str(_rel(root, f)), "skipped", f"not an image ({suffix} file)"))
            continue
        key = _series_key(f)
        if key is None:
            entries.append(Entry(str(_rel(root, f)), "skipped", "not an image (neither a NIfTI/NRRD/MetaImage "
                                 "file nor DICOM)"))
            continue
        if key[0] == "bad":
            entries.append(Entry(str(_rel(root, f)), "failed", key[1]))
            continue
        (by_uid if key[0] == "uid" else no_uid)[key[1]].append(f)

    # scan each series' smallest common folder once (shared by the UIDs living there)
    from medseg.io.dicom import scan_dicom

    scans: dict[Path, list] = {}

    scan_errors: dict[Path, str] = {}

    def scan(folder: Path) -> list:
        if folder not in scans:
            try:
                scans[folder] = scan_dicom(folder)
            except MedsegError as err:
                scan_errors[folder] = err.message
                scans[folder] = []
            except Exception as err:  # noqa: BLE001 - a reader bug must fail this series, not the batch
                scan_errors[folder] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
                scans[folder] = []
        return scans[folder]

    def add_series(folder_or_zip: Path, info, key_prefix: str, rel: PurePosixPath, problem: str | None = None) -> None:  # noqa: ANN001
        if not info.extra.get("readable", True) and info.extra.get("kind"):
            notes.append(f"skipped {folder_or_zip} series {info.uid}: {info.extra['kind']}, not an image")
            entries.append(Entry(f"{_rel(root, folder_or_zip)} [{info.uid or info.description or 'no UID'}]", "skipped",
                                 f"{info.extra['kind']}, not an image"))
            return
        cases.append(
            Case(
                key=f"{key_prefix}{info.uid or ''}",
                kind=CaseKind.DICOM,
                path=folder_or_zip,
                series=info.uid,
                rel=rel,
                series_label=series_label(info.number, info.description, info.uid or ""),
                description=_describe(info),
                problem=problem,
            )
        )

    for uid, paths in sorted(by_uid.items()):
        folder = _common_dir(paths)
        matching = [s for s in scan(folder) if s.uid == uid or (s.uid or "").startswith(uid + ".s")]
        if not matching:
            why = scan_errors.get(folder) or "not listed by the DICOM reader"
            entries.append(Entry(f"{_rel(root, folder)} [{uid}]", "failed",
                                 f"unreadable DICOM series ({len(paths)} file(s)): {why}"))
        for info in matching:
            add_series(folder, info, "dicom:", _rel(root, folder))
    for group, paths in sorted(no_uid.items()):
        folder = _common_dir(paths)
        listed = scan(folder)
        n_images = sum(1 for s in listed if s.extra.get("readable", True) or not s.extra.get("kind"))
        number, _, description = group.partition("|")
        if not listed:
            entries.append(Entry(f"{_rel(root, folder)} [series {group}]", "failed",
                                 f"unreadable DICOM series ({len(paths)} file(s)): "
                                 f"{scan_errors.get(folder) or 'not listed by the DICOM reader'}"))
        for i, info in enumerate(listed):
            if info.uid or str(info.number if info.number is not None else "") != number:
                continue
            if (info.description or "").strip() != description:
                continue
            problem = None
            if n_images > 1:  # the reader cannot be told which of several series to read
                problem = (
                    "DICOM series without SeriesInstanceUID shares its folder with other series, so it cannot be "
                    "selected; move its files to a folder of their own"
                )
            label_id = f"{info.number}-{info.description}-{i}"
            add_series(folder, info, f"dicom:{_rel(root, folder)}#{label_id}#", _rel(root, folder), problem)
    for z in zips:
        try:
            infos = scan_dicom(z)
        except MedsegError as err:
            entries.append(Entry(str(_rel(root, z)), "failed", f"unreadable zip: {err.message}"))
            continue
        except Exception as err:  # noqa: BLE001 - a reader bug must fail this input, not the batch
            entries.append(Entry(str(_rel(root, z)), "failed", f"unreadable zip: {type(err).__name__}: {err}"))
            continue
        if not infos:
            entries.append(Entry(str(_rel(root, z)), "skipped", "zip holds no DICOM image series"))
        rel = _rel(root, z)
        rel_dir = rel.with_name(rel.name[: -len(".zip")] or "_")
        for info in infos:
            add_series(z, info, f"zip:{rel}#", rel_dir)

    unique: dict[str, Case] = {}
    for case in cases:
        unique.setdefault(case.key, case)
    for note in notes:
        log.debug("%s", note)
    uniq_entries = {e.key: e for e in entries}
    return Discovery(cases=sorted(unique.values(), key=lambda c: c.key), notes=notes,
                     entries=sorted(uniq_entries.values(), key=lambda e: e.rel))


@dataclass(frozen=True)
class CaseFilter:
    """Which discovered cases run: ``--include``/``--exclude`` globs and the label-map rule.

    Globs match a case's path relative to INPUT_DIR (POSIX, ``*`` also crosses folders) or its file/folder
    name; with any ``include``, a case must match one. ``skip_labels`` skips image files that are label maps
    by :func:`medseg.labels_detect.label_map_reason` (only files whose name or label table hints at it are read).
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    skip_labels: bool = True

    def why_skipped(self, case: Case) -> str | None:
        """The one-line reason this case is skipped, or ``None`` when it runs."""
        from fnmatch import fnmatch

        names = (str(case.rel), case.rel.name, case.path.name)
        if self.include and not any(fnmatch(n, g) for g in self.include for n in names):
            return f"not matched by --include {' '.join(self.include)}"
        hit = next((g for g in self.exclude for n in names if fnmatch(n, g)), None)
        if hit is not None:
            return f"excluded by --exclude {hit}"
        if self.skip_labels and case.kind is CaseKind.FILE:
            return _label_file_reason(case.path)
        return None


def _label_file_reason(path: Path) -> str | None:
    from medseg.errors import MedsegError
    from medseg.label_tables import table_paths
    from medseg.labels_detect import label_map_reason, label_name_hint

    hinted = label_name_hint(path) or any(p.is_file() and p != path for p in table_paths(path).values())
    if not hinted:
        return None
    try:
        reason = label_map_reason(path)
    except MedsegError:
        return None  # unreadable: the case runs and fails with the reader's message
    return None if reason is None else f"label map, not a scan ({reason}); add --keep-label-files to segment it"


def group_channel_files(found: Discovery, channels: int, model: str = "the model") -> Discovery:
    """nnU-Net's raw-data naming for a multi-channel model: ``CASE_0000.nii.gz .. CASE_000N`` in one folder
    become ONE case (read as the channels in order, see :func:`medseg.channels.stack_channels`), shown as its
    ``_0000`` file; the other files are ``skipped`` entries naming the case they belong to, so every input is
    accounted for. A case whose channels are not exactly ``0000 .. channels-1`` (a file missing, an extra one)
    fails with the reason. One-channel models (``channels <= 1``) keep every file as its own case.
    """
    from medseg.channels import NNUNET_CHANNEL

    if channels <= 1:
        return found
    groups: dict[tuple[str, str, str], dict[int, Case]] = defaultdict(dict)
    keep: list[Case] = []
    for case in found.cases:
        m = NNUNET_CHANNEL.match(case.rel.name) if case.kind is CaseKind.FILE else None
        if m is None:
            keep.append(case)
            continue
        groups[(str(case.rel.parent), m.group("case"), m.group("suffix").lower())][int(m.group("channel"))] = case
    entries = list(found.entries)
    for (_, name, suffix), members in groups.items():
        numbers = sorted(members)
        first = members[numbers[0]]
        problem = None
        if numbers != list(range(channels)):
            missing = [f"{name}_{i:04d}{suffix}" for i in range(channels) if i not in members]
            extra = [f"{name}_{i:04d}{suffix}" for i in numbers if i >= channels]
            why = []
            if missing:
                why.append("missing " + ", ".join(missing))
            if extra:
                why.append("unexpected " + ", ".join(extra))
            problem = (f"nnU-Net case {name} has channel file(s) {', '.join(f'{i:04d}' for i in numbers)}; model "
                       f"{model} takes {channels} ({name}_0000{suffix} .. {name}_{channels - 1:04d}{suffix}): "
                       + "; ".join(why))
        desc = f"nnU-Net case {name}, {len(numbers)} channel file(s)"
        keep.append(Case(key=f"nnunet:{first.rel.parent / name}{suffix}", kind=CaseKind.FILE, path=first.path,
                         series=None, rel=first.rel, description=desc, problem=problem, note=first.note,
                         channel_files=tuple(members[i].path for i in numbers)))
        for i in numbers:
            if members[i] is not first:
                entries.append(Entry(str(members[i].rel), "skipped",
                                     f"channel {i:04d} of nnU-Net case {first.rel} (segmented with it)"))
    keep.sort(key=lambda c: c.key)
    return Discovery(cases=keep, notes=found.notes, entries=sorted(entries, key=lambda e: e.rel))


def filter_cases(found: Discovery, flt: CaseFilter) -> Discovery:
    """``found`` with the cases ``flt`` skips moved to ``skipped`` entries (each with its reason)."""
    keep: list[Case] = []
    entries = list(found.entries)
    for case in found.cases:
        reason = flt.why_skipped(case)
        if reason is None:
            keep.append(case)
        else:
            entries.append(Entry(case.display, "skipped", reason))
    return Discovery(cases=keep, notes=found.notes, entries=sorted(entries, key=lambda e: e.rel))

"""Kubernetes' external-storage suite (``e2e.test`` of k8s.io/kubernetes, the version
hack/storage-suite-lib.sh builds) against the driver as deploy/ installs it on the kind
cluster.

One test-driver definition per StorageClass of deploy/ (``storage-suite/*.yaml``), each run
by its own ginkgo invocation (they share the driver's name, so their specs share their
names). What runs: the suites in ``SUITES``; what does not, and why: ``SKIPS`` (this
machine or this cluster cannot run them; tests/e2e/README.md lists them too). ``SELECTIONS``
says which definitions and tags a run covers: ``default`` is what the e2e tier runs within
CI's budget, ``all`` is everything (``hack/storage-suite --all``).

Used by tests/e2e/test_storage_suite.py and, as ``python -m tests.e2e.storage_suite``, by
hack/storage-suite (which builds the binaries and brings the cluster up first)."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.cluster import GO_BIN, KUBECTL

HERE = Path(__file__).resolve().parent
DEFINITIONS_DIR = HERE / "storage-suite"
# Built by hack/storage-suite-lib.sh (the storage tests alone: hack/go/storagesuite).
E2E_TEST = GO_BIN / "e2e.test"
GINKGO = GO_BIN / "ginkgo"
DRIVER = "localvol.csi.dev"
PROCS = 3

# The test suites of the external-storage tests that apply to a CSI driver of this kind, by
# the name each spec carries after its test pattern ("[Testpattern: ...] provisioning ...").
SUITES = (
    "provisioning",
    "volumes",
    "volumeMode",
    "subPath",
    "multiVolume",
    "volumeIO",
    "snapshottable",
    "volume-expand",
    "ephemeral",
    "capacity",
    "fsgroupchangepolicy",
    "volumeLimits",
    "topology",
    "read-write-once-pod",
    "disruptive",
)
SPEC_SUITE = re.compile(r"\[Testpattern: [^\]]*\] (\S+)")
FAILED_STATES = frozenset({"failed", "panicked", "timedout", "interrupted", "aborted"})


@dataclass(frozen=True)
class Skip:
    """Specs left out by ``--skip``: ``pattern`` is a regular expression searched in a
    spec's full text, ``only`` the definitions it applies to (empty: all); ``title`` names
    it in tests/e2e/README.md."""

    title: str
    pattern: str
    reason: str
    only: tuple[str, ...] = ()

    def applies(self, definition: str) -> bool:
        return not self.only or definition in self.only


KUBELET_OVER_SSH = (
    "stops or restarts a node's kubelet with systemctl over SSH, and kind's nodes run no sshd"
)
ONLINE_EXT4 = (
    "online growth of a mounted ext4 needs CAP_SYS_RESOURCE, which this machine does not "
    "grant; the driver then grows it at the next stage (tests/e2e/test_volumes.py covers "
    "that), and xfs grows online here (xfs.yaml)"
)
SKIPS = (
    Skip("disruptive", r"\[Testpattern: [^\]]*\] disruptive ", KUBELET_OVER_SSH),
    Skip(
        "subPath, kubelet down",
        r"subPath should unmount if pod is (gracefully|force) deleted while kubelet is down",
        KUBELET_OVER_SSH,
    ),
    Skip(
        "any volume data source",
        r"provisioning should provision storage with any volume data source",
        "deploys hello-populator and volume-data-source-validator, images this cluster does "
        "not have (the validator with imagePullPolicy: Always, a pull every time)",
    ),
    Skip(
        "block patterns of ext4 and xfs",
        r"\[Testpattern: [^\]]*block volmode",
        "a raw block claim of any loop class is the same unformatted loop device: the block "
        "patterns run once, with block.yaml (localvol-block)",
        only=("ext4", "xfs"),
    ),
    Skip(
        "online ext4 growth",
        r"\((default fs|ext4)\)\(allowExpansion\)\] volume-expand should resize volume when "
        r"PVC is edited while pod is using it",
        ONLINE_EXT4,
        only=("ext4",),
    ),
    Skip(
        "ext4 growth after a restart",
        r"\((default fs|ext4)\)\(allowExpansion\)\] volume-expand (Verify if offline PVC "
        r"expansion works|should resize volume when PVC is edited and the pod is re-created)",
        f"{ONLINE_EXT4}. Without ControllerExpandVolume (--no-controller-expansion) the "
        "driver learns a new size only from NodeExpandVolume, which the kubelet calls after "
        "it has staged and published the volume for the next pod: that growth is online too",
        only=("ext4",),
    ),
    Skip(
        "online ext4 growth, generic ephemeral",
        r"Generic Ephemeral-volume [^\]]*\] ephemeral should support expansion of pvcs",
        ONLINE_EXT4,
        only=("ext4",),
    ),
)


@dataclass(frozen=True)
class Definition:
    """A test-driver definition: ``storage-suite/<name>.yaml``; ``patterns``: a regular
    expression the spec's test pattern must match (empty: every pattern)."""

    name: str
    patterns: str = ""

    @property
    def file(self) -> Path:
        return DEFINITIONS_DIR / f"{self.name}.yaml"

    def focus(self, suites: Sequence[str] = SUITES) -> str:
        """The specs of ``suites`` with this definition's patterns (``--focus``)."""
        names = "|".join(re.escape(s) for s in suites)
        pattern = f"[^\\]]*{self.patterns}[^\\]]*" if self.patterns else "[^\\]]*"
        return (
            f"External Storage \\[Driver: {re.escape(DRIVER)}\\] "
            f"\\[Testpattern: {pattern}\\] ({names})( |$)"
        )

    def skips(self) -> list[Skip]:
        return [s for s in SKIPS if s.applies(self.name)]


DEFINITIONS = (
    Definition("ext4"),
    Definition("xfs"),
    # A Filesystem claim of localvol-block is an ext4 volume: only its raw block patterns.
    Definition("block", patterns="block volmode"),
    Definition("directory"),
)


@dataclass(frozen=True)
class Selection:
    """Which definitions run, which of their suites (``suites``: by definition, absent: all
    of ``SUITES``), and which spec tags (``[Slow]``, ``[Serial]``) stay out."""

    definitions: tuple[str, ...]
    without_tags: tuple[str, ...] = ()
    suites: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def suites_of(self, name: str) -> tuple[str, ...]:
        return self.suites.get(name, SUITES)


SELECTIONS = {
    "all": Selection(tuple(d.name for d in DEFINITIONS)),
    # CI's share (about 9 minutes of a warm run): the quick specs of ext4 and directory,
    # and of xfs only volume-expand, the one thing xfs does here that ext4 cannot (online
    # growth); the rest of xfs is the loop code path ext4 runs, and the raw block patterns
    # (block.yaml) are left to `--selection all` (tests/e2e/test_volumes.py and the
    # integration tier cover raw block volumes in CI). Left out too: the [Slow] and [Serial]
    # specs; `--selection all` runs them.
    "default": Selection(
        ("ext4", "xfs", "directory"),
        without_tags=("Slow", "Serial"),
        suites={"xfs": ("volume-expand",)},
    ),
}


def definition(name: str) -> Definition:
    for d in DEFINITIONS:
        if d.name == name:
            return d
    raise KeyError(f"no test-driver definition {name!r} (have: {[d.name for d in DEFINITIONS]})")


@dataclass
class Case:
    name: str
    suite: str
    state: str  # passed, skipped, failed
    seconds: float
    message: str = ""
    reason: str = ""  # ours, when SKIPS left it out


@dataclass
class Outcome:
    definition: str
    cases: list[Case] = field(default_factory=list)
    seconds: float = 0.0
    returncode: int = 0
    log: Path | None = None

    def counts(self) -> dict[str, Counter[str]]:
        per_suite: dict[str, Counter[str]] = {}
        for case in self.cases:
            per_suite.setdefault(case.suite, Counter())[case.state] += 1
        return per_suite

    @property
    def failed(self) -> list[Case]:
        return [c for c in self.cases if c.state == "failed"]

    def summary(self) -> list[str]:
        lines = [
            f"{self.definition}: {self.total('passed')} passed, {self.total('skipped')} "
            f"skipped, {self.total('failed')} failed in {self.seconds:.0f}s"
        ]
        for suite, counts in sorted(self.counts().items()):
            lines.append(
                f"  {suite:22} {counts['passed']:3} passed {counts['skipped']:3} skipped "
                f"{counts['failed']:3} failed"
            )
        return lines

    def total(self, state: str) -> int:
        return sum(1 for c in self.cases if c.state == state)


@dataclass(frozen=True)
class Target:
    """The cluster the suite runs against: a kubeconfig and, where it holds several, the
    context (kind's ``kind-localvol``)."""

    kubeconfig: Path
    context: str | None = None


def command(
    target: Target,
    d: Definition,
    report: Path,
    suites: Sequence[str] = SUITES,
    without_tags: Sequence[str] = (),
    procs: int = PROCS,
) -> list[str]:
    skips = [s.pattern for s in d.skips()]
    skips += [re.escape(f"[{tag}]") for tag in without_tags]
    argv = [
        str(GINKGO),
        "run",
        f"--procs={procs}",
        *(["-p"] if procs > 1 else []),
        f"--focus={d.focus(suites)}",
        *(f"--skip={pattern}" for pattern in skips),
        "--timeout=6h",
        "--no-color",
        f"--junit-report={report.name}",
        f"--output-dir={report.parent}",
        str(E2E_TEST),
        "--",
        f"-storage.testdriver={d.file}",
        f"-kubeconfig={target.kubeconfig}",
        *([f"-context={target.context}"] if target.context else []),
        f"-kubectl-path={KUBECTL}",
        "-e2e-verify-service-account=false",
        "-disable-log-dump",
    ]
    return argv


def read_report(d: Definition, report: Path, suites: Sequence[str] = SUITES) -> list[Case]:
    """The specs of ``d``'s focus in a ginkgo JUnit report; specs our ``--skip`` left out
    carry its reason."""
    focus = re.compile(d.focus(suites))
    skips = d.skips()
    cases = []
    for element in ET.parse(report).getroot().iter("testcase"):
        name = element.get("name", "")
        text = re.sub(r"^\[It\] ", "", name)
        if not focus.search(text):
            continue
        suite_match = SPEC_SUITE.search(text)
        suite = suite_match.group(1) if suite_match else "?"
        status = element.get("status", "")
        message = ""
        for child in element:
            if child.tag in ("failure", "error", "skipped"):
                message = (child.get("message") or child.text or "").strip()
        reason = next((s.reason for s in skips if re.search(s.pattern, text)), "")
        if status in FAILED_STATES:
            state = "failed"
        elif status == "passed":
            state = "passed"
        else:
            state = "skipped"
        cases.append(Case(text, suite, state, float(element.get("time", "0")), message, reason))
    return cases


def run_definition(
    target: Target,
    d: Definition,
    out_dir: Path,
    suites: Sequence[str] = SUITES,
    without_tags: Sequence[str] = (),
    procs: int = PROCS,
    stream: bool = False,
) -> Outcome:
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / f"junit-{d.name}.xml"
    log = out_dir / f"ginkgo-{d.name}.log"
    argv = command(target, d, report, suites, without_tags, procs)
    start = time.monotonic()
    with log.open("w") as sink:
        sink.write(" ".join(argv) + "\n\n")
        sink.flush()
        if stream:
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=out_dir
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                sink.write(line)
                sys.stdout.write(line)
            returncode = proc.wait()
        else:
            returncode = subprocess.run(
                argv, stdout=sink, stderr=subprocess.STDOUT, cwd=out_dir, check=False
            ).returncode
    outcome = Outcome(d.name, seconds=time.monotonic() - start, returncode=returncode, log=log)
    if report.exists():
        outcome.cases = read_report(d, report, suites)
    return outcome


def explain(outcomes: Iterable[Outcome]) -> list[str]:
    """Every failure with its message; the reasons of our skips, once each."""
    lines = []
    reasons: dict[str, int] = {}
    for outcome in outcomes:
        for case in outcome.failed:
            lines.append(f"FAILED [{outcome.definition}] {case.name}\n    {case.message[:2000]}")
        for case in outcome.cases:
            if case.reason:
                reasons[case.reason] = reasons.get(case.reason, 0) + 1
    for reason, count in reasons.items():
        lines.append(f"skipped ({count} specs): {reason}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hack/storage-suite", description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument("--selection", choices=sorted(SELECTIONS), default="all")
    parser.add_argument(
        "--definition",
        action="append",
        default=[],
        help="only these definitions (ext4, xfs, block, directory); repeatable",
    )
    parser.add_argument("--procs", type=int, default=PROCS)
    parser.add_argument("--out", type=Path, default=Path("/tmp/localvol-storage-suite"))
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config")),
    )
    parser.add_argument("--context", default="kind-localvol", help="'' for the current one")
    args = parser.parse_args(argv)
    target = Target(args.kubeconfig, args.context or None)
    selection = SELECTIONS[args.selection]
    names = args.definition or list(selection.definitions)
    outcomes = []
    for name in names:
        d = definition(name)
        print(f"==> {d.name}: ginkgo with {d.file}", file=sys.stderr)
        outcome = run_definition(
            target,
            d,
            args.out,
            selection.suites_of(name),
            selection.without_tags,
            args.procs,
            stream=True,
        )
        outcomes.append(outcome)
        if not outcome.cases:
            print(f"error: no JUnit report from {d.name} (log: {outcome.log})", file=sys.stderr)
    print()
    for outcome in outcomes:
        print("\n".join(outcome.summary()))
    print("\n".join(explain(outcomes)))
    print(f"reports and logs: {args.out}")
    bad = any(o.failed or not o.cases for o in outcomes)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

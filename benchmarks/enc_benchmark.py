"""How fast is ``opslab-enc``, and how much of that is opslab's own doing?

Puppet runs the ENC once per catalog compile, as a new process, so what
matters is whole-process wall time, and the honest yardstick is what any
process must pay anyway. One run of this script:

1. Generates a directory of 10,000 hosts in 500 projects (plus people and the
   ``default`` entry) below ``dc=example,dc=org``, bulk-loads it with slapadd
   into a throwaway slapd (:class:`opslab.slapd.ThrowawaySlapd`) and starts it.
2. Writes an opslab configuration file pointing at the slapd's ldapi socket.
3. Times whole processes, interleaved round-robin on the same target hosts so
   that all three see the same machine noise:

   * ``opslab-enc --config CFG HOST``, the console script Puppet would run;
   * the *Python floor*: a tiny script that imports ldap and yaml, runs the
     ENC's host search and prints the classes and variables as YAML, the least
     any Python ENC could do;
   * ``ldapsearch`` fetching the same entry, the least any ENC could do.

   Bytecode is cached as on a real server, in a temporary
   ``PYTHONPYCACHEPREFIX`` (so nothing is written into the source tree, and a
   ``PYTHONDONTWRITEBYTECODE`` in the caller's environment does not make every
   run recompile opslab). A warm-up pass (not timed) fills that cache, primes
   the ENC's cache files (so timed runs see the steady state of a healthy ENC:
   an unchanged answer only touches its cache file) and checks each ENC
   answer against the generated data.
4. Times classification in-process (one Directory, one Classifier, reused),
   with and without rendering the YAML: the cost of opslab's own logic.
5. Profiles ``import opslab.enc.cli`` with ``-X importtime``: what it costs
   beyond the floor's own imports (ldap, yaml), and a check that none of the
   other components' heavy dependencies (Flask, openstacksdk, python-jenkins,
   GitPython) is on the ENC's start-up path.
6. Prints a summary against the targets. Benchmarks report; they do not fail:
   the exit status is 0 whatever the numbers (non-zero only if the benchmark
   itself cannot run, e.g. a command fails or gives a wrong answer).

Usage: ``python benchmarks/enc_benchmark.py [--runs N] [--classify-runs N] [--json FILE]``
"""

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from common import (
    COMMAND_TIMEOUT,
    SCHEMAS,
    SUFFIX,
    BenchmarkError,
    ExpectedNode,
    bytecode_environment,
    find_script,
    load_directory,
    print_targets,
    run_measured,
    run_script,
    seeded_random,
    succeeded,
    summary,
    write_results,
)

from opslab.config import Config, load
from opslab.directory import Deadline, Directory
from opslab.enc.classifier import Classifier
from opslab.enc.render import to_yaml
from opslab.slapd import ThrowawaySlapd

TARGET_HOSTS = 40
NODE_FILTER = "(&(objectClass=puppetClient)(|(cn={host})(associatedDomain={host})))"

ENC_FLOOR_RATIO_TARGET = 1.5
CLASSIFY_MEDIAN_TARGET_MS = 2.0
FORBIDDEN_IMPORTS = ("flask", "openstack", "jenkins", "git")
ENC_MODULE = "opslab.enc.cli"
FLOOR_IMPORTS = "import ldap, yaml, ldap.filter"
IMPORT_REPEATS = 5

# The least a Python ENC could do: same libraries, same search, YAML out.
FLOOR_SCRIPT = '''\
import sys

import ldap
import yaml
from ldap.filter import escape_filter_chars

uri, base, host = sys.argv[1:4]
value = escape_filter_chars(host)
connection = ldap.initialize(uri)
connection.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
results = connection.search_s(
    base,
    ldap.SCOPE_SUBTREE,
    f"(&(objectClass=puppetClient)(|(cn={value})(associatedDomain={value})))",
)
connection.unbind_s()
if not results:
    sys.exit(f"no entry for {host}")
_, attributes = results[0]
sys.stdout.write(yaml.safe_dump({
    "classes": [v.decode() for v in attributes.get("puppetClass", [])],
    "parameters": [v.decode() for v in attributes.get("puppetVar", [])],
}))
'''


def write_config(slapd: ThrowawaySlapd, workdir: Path) -> Path:
    """An opslab configuration file for the throwaway slapd, with its own cache dir."""
    path = workdir / "opslab.yaml"
    document = {
        "ldap": {"uri": slapd.ldapi_uri, "base": SUFFIX},
        "cache": {"dir": str(workdir / "enc-cache")},
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


# --- whole processes -----------------------------------------------------------------------


def run_command(command: Sequence[str], environment: dict[str, str]) -> tuple[float, str]:
    """Run ``command`` to completion; its wall time in ms and its stdout.

    Raises BenchmarkError unless it exits 0 with something on stdout.
    """
    result = succeeded(run_measured(command, COMMAND_TIMEOUT, environment), command[0])
    if not result.stdout.strip():
        raise BenchmarkError(f"{command} printed nothing; stderr:\n{result.stderr[-2000:]}")
    return result.seconds * 1000, result.stdout


def check_enc_answer(host: str, output: str, expected: ExpectedNode) -> None:
    """Fail unless opslab-enc's YAML gives the generated classes and environment."""
    answer = yaml.safe_load(output)
    classes = answer.get("classes") or []
    got = frozenset(classes)  # a list, or a mapping of class -> parameters
    if got != expected.classes or answer.get("environment") != expected.environment:
        raise BenchmarkError(
            f"opslab-enc {host}: classes {sorted(got)}, environment {answer.get('environment')!r}; "
            f"expected {sorted(expected.classes)}, {expected.environment!r}"
        )


def find_ldapsearch() -> str:
    """The ldapsearch binary, or a clear error naming the package."""
    path = shutil.which("ldapsearch")
    if path is None:
        raise BenchmarkError("ldapsearch not found (Debian: apt-get install ldap-utils)")
    return path


def measure_processes(
    commands: dict[str, Callable[[str], list[str]]],
    hosts: Sequence[str],
    expected: dict[str, ExpectedNode],
    runs: int,
    environment: dict[str, str],
) -> dict[str, list[float]]:
    """Wall times (ms) per command, interleaved round-robin over ``hosts``.

    Each round runs every command once on the same host, starting with a
    different command each round, so no command always runs right after the
    same neighbour or always first.
    """
    names = list(commands)
    for host in hosts:  # warm-up: bytecode, page cache, ENC cache files; not timed
        for name in names:
            _, output = run_command(commands[name](host), environment)
            if name == "opslab-enc":
                check_enc_answer(host, output, expected[host])
    timings: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(runs):
        host = hosts[round_number % len(hosts)]
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed_ms, _ = run_command(commands[name](host), environment)
            timings[name].append(elapsed_ms)
    return timings


# --- in process ----------------------------------------------------------------------------


def measure_in_process(
    config: Config, hosts: Sequence[str], runs: int, rng: random.Random
) -> dict[str, list[float]]:
    """Per-call times (ms) of classify, and of classify+to_yaml, on one reused connection."""
    classify_ms: list[float] = []
    render_ms: list[float] = []
    with Directory(config.ldap, Deadline(3600)) as directory:
        classifier = Classifier(directory, config)
        for host in rng.sample(hosts, 50):  # warm-up: connect, first searches
            to_yaml(classifier.classify(host))
        for host in rng.choices(hosts, k=runs):
            started = time.perf_counter()
            classification = classifier.classify(host)
            classified = time.perf_counter()
            to_yaml(classification)
            rendered = time.perf_counter()
            classify_ms.append((classified - started) * 1000)
            render_ms.append((rendered - started) * 1000)
    return {"classify": classify_ms, "classify+to_yaml": render_ms}


# --- imports -------------------------------------------------------------------------------


def parse_importtime(stderr: str) -> list[tuple[str, int, int]]:
    """``-X importtime`` lines as (module, self us, cumulative us), in import order."""
    modules = []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        if self_us.strip().isdigit():  # skips the header line
            modules.append((name.strip(), int(self_us), int(cumulative_us)))
    return modules


def import_profile(statement: str, environment: dict[str, str]) -> list[tuple[str, int, int]]:
    """What running ``statement`` in a fresh interpreter imports, per ``-X importtime``."""
    # Not in the checkout: its opslab/ folder would shadow the installed package.
    result = succeeded(run_measured([sys.executable, "-X", "importtime", "-c", statement],
                                    COMMAND_TIMEOUT, environment, Path(tempfile.gettempdir())),
                       statement)
    return parse_importtime(result.stderr)


def median_self_ms(statement: str, environment: dict[str, str]) -> dict[str, float]:
    """Each imported module's own import time (ms), median over IMPORT_REPEATS runs."""
    times: dict[str, list[int]] = {}
    for _ in range(IMPORT_REPEATS):
        for name, self_us, _ in import_profile(statement, environment):
            times.setdefault(name, []).append(self_us)
    return {name: statistics.median(values) / 1000 for name, values in times.items()}


def measure_imports(environment: dict[str, str]) -> dict[str, Any]:
    """The ENC's start-up imports: their cost beyond the floor's, and any forbidden one."""
    import_profile(f"import {ENC_MODULE}; {FLOOR_IMPORTS}", environment)  # fill bytecode cache
    enc = median_self_ms(f"import {ENC_MODULE}", environment)
    floor = median_self_ms(FLOOR_IMPORTS, environment)
    extra = {name: ms for name, ms in enc.items() if name not in floor}
    return {
        "enc_modules": len(enc),
        "enc_total_ms": sum(enc.values()),
        "floor_modules": len(floor),
        "floor_total_ms": sum(floor.values()),
        "extra_modules": len(extra),
        "extra_total_ms": sum(extra.values()),
        "extra_slowest_ms": sorted(extra.items(), key=lambda item: item[1], reverse=True)[:10],
        "forbidden_found": sorted(
            name for name in enc if name.split(".")[0] in FORBIDDEN_IMPORTS
        ),
    }


# --- reporting -----------------------------------------------------------------------------


def print_import_report(imports: dict[str, Any]) -> None:
    """Print what the ENC imports beyond the floor, and any forbidden package."""
    print(f"(bytecode cached; per module the median of {IMPORT_REPEATS} runs; totals include "
          "interpreter start-up; shared modules vary run to run, so the difference of the "
          "totals is noisier than the 'beyond floor' sum)")
    print(f"{ENC_MODULE:<16} {imports['enc_modules']:4d} modules {imports['enc_total_ms']:7.1f} ms")
    print(f"{'floor':<16} {imports['floor_modules']:4d} modules {imports['floor_total_ms']:7.1f} ms"
          f"   ({FLOOR_IMPORTS})")
    print(f"{'beyond floor':<16} {imports['extra_modules']:4d} modules "
          f"{imports['extra_total_ms']:7.1f} ms, slowest (ms): " + ", ".join(
              f"{name} {ms:.1f}" for name, ms in imports["extra_slowest_ms"]))
    print(f"forbidden ({', '.join(FORBIDDEN_IMPORTS)}): "
          f"{', '.join(imports['forbidden_found']) or 'none'}")


def print_summary(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Print PASS/FAIL per target; returns them for the JSON."""
    ratio = results["processes"]["enc_over_floor"]
    classify_median = results["in_process"]["classify"]["median"]
    forbidden = results["imports"]["forbidden_found"]
    return print_targets({
        f"opslab-enc within {ENC_FLOOR_RATIO_TARGET}x of the Python floor": (
            ratio <= ENC_FLOOR_RATIO_TARGET, f"{ratio:.2f}x"),
        f"in-process classify median under {CLASSIFY_MEDIAN_TARGET_MS:g} ms": (
            classify_median < CLASSIFY_MEDIAN_TARGET_MS, f"{classify_median:.3f} ms"),
        "no flask/openstack/jenkins/git on the ENC start-up path": (
            not forbidden, ", ".join(forbidden) or "none"),
    })


def print_process_report(timings: dict[str, list[float]]) -> dict[str, Any]:
    """Print median/p90 per command and the ratios; returns them."""
    stats = {name: summary(samples) for name, samples in timings.items()}
    print(f"{'command':<14} {'median':>9} {'p90':>9} {'min':>9}   (ms, whole process)")
    for name, row in stats.items():
        print(f"{name:<14} {row['median']:9.1f} {row['p90']:9.1f} {row['min']:9.1f}")
    enc, floor, ldapsearch = (stats[n]["median"] for n in ("opslab-enc", "floor", "ldapsearch"))
    paired_overhead = statistics.median(
        e - f for e, f in zip(timings["opslab-enc"], timings["floor"], strict=True)
    )
    ratios = {
        "enc_over_floor": enc / floor,
        "enc_over_ldapsearch": enc / ldapsearch,
        "enc_minus_floor_paired_median_ms": paired_overhead,
    }
    print(f"ratio opslab-enc / floor      {ratios['enc_over_floor']:.2f}x")
    print(f"ratio opslab-enc / ldapsearch {ratios['enc_over_ldapsearch']:.2f}x")
    print(f"opslab-enc - floor, median of same-round differences: {paired_overhead:+.1f} ms")
    return {"stats": stats, **ratios}


def main(argv: list[str] | None = None) -> int:
    """Run every measurement once and print the report; 0 whatever the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40,
                        help="rounds of the three timed processes (default 40)")
    parser.add_argument("--classify-runs", type=int, default=2000,
                        help="in-process classifications to time (default 2000)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    arguments = parser.parse_args(argv)
    if arguments.runs < 2 or arguments.classify_runs < 2:
        parser.error("--runs and --classify-runs must be at least 2")

    ldapsearch, enc = find_ldapsearch(), find_script("opslab-enc")
    results: dict[str, Any] = {"runs": arguments.runs, "classify_runs": arguments.classify_runs}
    with tempfile.TemporaryDirectory(prefix="opslab-bench-") as scratch:
        workdir = Path(scratch)
        environment = bytecode_environment(workdir / "pycache")
        slapd = ThrowawaySlapd(SUFFIX, SCHEMAS)
        try:
            print("\n== 1. directory ==")
            expected = load_directory(slapd, workdir)
            config_path = write_config(slapd, workdir)
            floor_script = workdir / "floor.py"
            floor_script.write_text(FLOOR_SCRIPT, encoding="utf-8")
            uri = slapd.ldapi_uri
            commands: dict[str, Callable[[str], list[str]]] = {
                "opslab-enc": lambda host: [enc, "--config", str(config_path), host],
                "floor": lambda host: [sys.executable, str(floor_script), uri, SUFFIX, host],
                "ldapsearch": lambda host: [
                    ldapsearch, "-x", "-LLL", "-H", uri, "-b", SUFFIX,
                    NODE_FILTER.format(host=host),
                ],
            }
            rng = seeded_random()
            all_hosts = sorted(expected)
            targets = rng.sample(all_hosts, TARGET_HOSTS)

            print(f"\n== 2-3. whole processes: {arguments.runs} interleaved rounds "
                  f"over {len(targets)} hosts (after a checked warm-up pass) ==")
            timings = measure_processes(
                commands, targets, expected, arguments.runs, environment
            )
            results["processes"] = print_process_report(timings)

            print(f"\n== 4. in-process: {arguments.classify_runs} classifications, "
                  "one Directory and Classifier ==")
            in_process = measure_in_process(
                load(str(config_path)), all_hosts, arguments.classify_runs, rng
            )
            results["in_process"] = {name: summary(s) for name, s in in_process.items()}
            for name, row in results["in_process"].items():
                print(f"{name:<17} median {row['median']:6.3f} ms   "
                      f"p99 {row['p99']:6.3f} ms")
        finally:
            slapd.destroy()

        print(f"\n== 5. start-up imports: python -X importtime -c 'import {ENC_MODULE}' ==")
        imports = measure_imports(environment)
    results["imports"] = imports
    print_import_report(imports)
    results["targets"] = print_summary(results)
    write_results(arguments.json, results)
    return 0


if __name__ == "__main__":
    run_script(main, "enc_benchmark")

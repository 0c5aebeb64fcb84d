"""How fast does ``opslab branch sync`` deploy branches, next to r10k, on a large repository?

opslab's branch runner deploys the branches of a Puppet control repository as
environment directories, the job r10k does on most Puppet servers. What an
operator feels is the wall time of one whole command (a webhook, a timer or a
person runs it), and what the server pays is the disk used by forty-odd
environments. One run of this script:

1. Generates a control repository the size of a large real one with a fixed
   seed: about 10,800 files and 73 MB in the tree (1 MB = 2**20 bytes, as
   ``du`` counts), in ``modules/`` (Puppet modules with manifests, templates,
   files, lib/puppet/..., spec/), ``site/`` (roles and profiles), ``hieradata/``
   and the usual top-level files, a few executable scripts and relative
   symlinks. The content is text made of pseudo-random words, so it compresses
   the way code does, plus a handful of data files of a few hundred KB. It is
   written with ``git fast-import`` into a bare repository that stands for the
   remote: ``production`` and 40 branches ``feature_01``..``feature_40``, each
   one small commit (a few lines in 1 to 3 files) on top of production.
2. Measures opslab and r10k side by side, each with a fresh cache and
   environments directory, on the same remote (a ``file://`` URL, so neither
   tool gets git's local-clone hard links), interleaved where both run the
   same step:

   a. the first deploy of ``production`` from cold (median of 3, fresh
      directories each time);
   b. redeploying it with nothing changed (median of 5);
   c. redeploying it after a one-line commit to production (median of 3, a
      fresh commit each time);
   d. deploying all 41 branches from cold: wall time, then the disk used by
      the environments and cache directories together (``du -sk`` over both,
      so a hard-linked file counts once) and their file counts.

   opslab runs as ``opslab branch sync --remote URL --environments DIR --cache
   DIR [production]``, r10k as ``r10k deploy environment -c r10k.yaml
   [production]``. Every command is a whole process timed with perf_counter,
   with a timeout. Python bytecode is cached as on a real server (a temporary
   ``PYTHONPYCACHEPREFIX``, filled by an untimed warm-up), so opslab's times
   do not include compiling itself. Before each timed command an untimed
   ``sync`` writes back what earlier commands left dirty, so no tool pays for
   another's writes (opslab fsyncs its records, r10k does not fsync at all).
   CPU time (user + system of the tool and the git it waits for) is shown
   too: it is far steadier than wall time on a shared machine.
3. Checks what opslab deployed (r10k's result is only sanity-checked): the
   production tree against a ``git archive`` listing of the commit (paths,
   exec bits, symlink targets, sizes), the changed line after each one-line
   commit, and after (d) all 41 environments and each branch's own change.
4. Prints a table against the targets (nothing changed under 0.1 s; a one-line
   change under 1 s; all 41 branches from cold under 40 s and 300 MB; the
   first deploy no slower than r10k) and r10k's figures on a comparable
   machine for context. Benchmarks report: the exit status is 0 whatever the
   numbers, non-zero only if the benchmark cannot run or opslab's result is
   wrong.

Usage: ``python benchmarks/branch_benchmark.py [--quick] [--json FILE] [--keep]
[--all-timeout SECONDS]``
"""

import argparse
import itertools
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import BenchmarkError, bytecode_environment, find_script

from opslab.names import environment_for_branch

MB = 1024 * 1024
SEED = 20240611
BASE_TIME = 1_717_000_000  # commit timestamps: same repository, same commit ids, every run
IDENTITY = "Bench <bench@example.org>"
FEATURE_BRANCHES = 40
FIRST_RUNS = 3
NO_CHANGE_RUNS = 5
ONE_LINE_RUNS = 3

DEPLOY_TIMEOUT = 900.0  # seconds, for one deploy of one environment
ALL_TIMEOUT = 900.0  # seconds, for one deploy of all branches (--all-timeout)
GIT_TIMEOUT = 600.0  # seconds, for building the repository and reading it back
QUICK_TIMEOUT = 60.0  # seconds, for du, --help, version queries

TARGET_NO_CHANGE_S = 0.1
TARGET_ONE_LINE_S = 1.0
TARGET_ALL_S = 40.0
TARGET_ALL_MB = 300.0

# r10k on a comparable machine with the real repository, for context.
REFERENCE_R10K = {
    "first": "~20 s",
    "no_change": "~16 s",
    "one_line": "~13 s",
    "all_wall": "~380 s",
    "all_disk": "~3.0 GB",
}

# Variables that would point git at some other repository than the one meant.
GIT_REPOSITORY_VARIABLES = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_COMMON_DIR",
)


class WrongResult(BenchmarkError):
    """opslab deployed something other than the commit it was asked for."""


# --- the repository ------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """How big a repository to generate."""

    modules: int
    profiles: int
    roles: int
    files: int
    tree_bytes: int
    large_files: int


FULL = Shape(modules=240, profiles=160, roles=60, files=10_800, tree_bytes=73 * MB,
             large_files=16)
QUICK = Shape(modules=24, profiles=16, roles=6, files=1_080, tree_bytes=73 * MB // 10,
              large_files=2)

_BASE_TEXT = """
ensure present absent file directory service package exec notify require subscribe before
owner group mode content source template config server client daemon port host path user
root admin backup cron log rotate monitor agent cluster node role profile base common
default params install manage enable running stopped restart reload firewall rule chain
accept drop ssh key certificate ssl tls cert bundle proxy cache redis postgres mysql nginx
apache vhost listen bind address network interface route dns resolver ntp time zone locale
mail relay queue worker api web app frontend backend storage volume mount disk quota limit
memory cpu timeout retry interval threshold alert check metric collector exporter dashboard
token secret vault ldap auth kerberos realm domain site datacenter region rack environment
stage release version upgrade legacy compat deprecated feature flag toggle option value list
hash array string integer boolean include contain define function type provider fact
resource parameter variable scope lookup hiera data module the a of to and for with when
this that from into each only not all any new old first last next default local remote
"""
BASE_WORDS = _BASE_TEXT.split()
_SYLLABLE_TEXT = ("ka lo mi ra te su no vi de pa ri sto gen ver tor lan mar bel cor dis fen gal "
                  "hul jor kel lum nor pel quin ros tal ung vor wes xan yor zel")
SYLLABLES = _SYLLABLE_TEXT.split()
_MODULE_TEXT = ("nginx apache postgresql mysql redis haproxy keepalived ntp chrony ssh sudo "
                "accounts firewall logrotate rsyslog prometheus grafana elasticsearch kibana "
                "docker kubernetes etcd consul vault bind unbound postfix dovecot openldap "
                "sssd nfs samba java tomcat jenkins gitlab mongodb rabbitmq memcached")
MODULE_NAMES = _MODULE_TEXT.split()
PUPPET_TYPES = ("String", "Integer", "Boolean", "Array[String]", "Hash", "Optional[String]",
                "Stdlib::Absolutepath", "Enum['present', 'absent']")


@dataclass
class Words:
    """Words with a Zipf-like frequency, drawn from one seeded RNG."""

    rng: random.Random
    vocabulary: list[str]
    cumulative: list[float]

    @classmethod
    def create(cls, rng: random.Random) -> "Words":
        synthetic: set[str] = set()
        while len(synthetic) < 2500:
            synthetic.add("".join(rng.choices(SYLLABLES, k=rng.randint(2, 4))))
        vocabulary = list(dict.fromkeys(BASE_WORDS)) + sorted(synthetic)
        weights = [1.0 / (rank + 1) ** 0.9 for rank in range(len(vocabulary))]
        return cls(rng, vocabulary, list(itertools.accumulate(weights)))

    def take(self, count: int) -> list[str]:
        return self.rng.choices(self.vocabulary, cum_weights=self.cumulative, k=count)

    def sentence(self, low: int = 5, high: int = 14) -> str:
        return " ".join(self.take(self.rng.randint(low, high))).capitalize() + "."

    def ident(self) -> str:
        return "_".join(self.take(self.rng.randint(1, 2)))


def fill(header: str, stanza: Callable[[], str], footer: str, size: int) -> bytes:
    """``header``, then stanzas until about ``size`` bytes, then ``footer``."""
    chunks = [header]
    total = len(header) + len(footer)
    while total < size:
        chunk = stanza()
        chunks.append(chunk)
        total += len(chunk)
    chunks.append(footer)
    return "".join(chunks).encode()


class Writer:
    """Text in the style of each kind of file in a control repository."""

    def __init__(self, rng: random.Random, words: Words) -> None:
        self.rng = rng
        self.words = words

    def manifest(self, name: str, size: int) -> bytes:
        w, rng = self.words, self.rng
        params = [w.ident() for _ in range(rng.randint(2, 8))]
        header = "".join([
            f"# @summary {w.sentence()}\n#\n",
            *(f"# @param {param}\n#   {w.sentence()}\n" for param in params),
            f"class {name} (\n",
            *(f"  {rng.choice(PUPPET_TYPES)} ${param} = '{w.take(1)[0]}',\n" for param in params),
            ") {\n",
        ])
        module = name.split("::")[0]

        def stanza() -> str:
            a, b, c, d = w.take(4)
            kind = rng.randrange(5)
            if kind == 0:
                return (f"  file {{ '/etc/{a}/{b}.conf':\n    ensure  => file,\n"
                        f"    owner   => 'root',\n    mode    => '0644',\n"
                        f"    content => template('{module}/{c}.conf.erb'),\n"
                        f"    notify  => Service['{d}'],\n  }}\n\n")
            if kind == 1:
                state = rng.choice(("installed", "latest", "absent"))
                return f"  package {{ '{a}-{b}':\n    ensure => {state},\n  }}\n\n"
            if kind == 2:
                return (f"  # {w.sentence()}\n  if ${a}_{b} {{\n    include {module}::{c}\n"
                        f"  }} else {{\n    notice(\"{w.sentence(3, 6)}\")\n  }}\n\n")
            if kind == 3:
                return (f"  service {{ '{a}':\n    ensure    => running,\n    enable    => true,\n"
                        f"    subscribe => File['/etc/{b}/{c}.conf'],\n  }}\n\n")
            return (f"  exec {{ '{a} {b}':\n    command => '/usr/bin/{c} --{d}',\n"
                    f"    creates => '/var/lib/{a}/{d}',\n    path    => $path,\n  }}\n\n")

        return fill(header, stanza, "}\n", size)

    def template(self, size: int) -> bytes:
        w, rng = self.words, self.rng
        header = "# This file is managed by Puppet. Local changes will be overwritten.\n"

        def stanza() -> str:
            a, b, c = w.take(3)
            kind = rng.randrange(4)
            if kind == 0:
                return f"{a}_{b} = <%= @{c} %>\n"
            if kind == 1:
                return f"<% if @{a} -%>\n{b} {c} {rng.randint(1, 65535)}\n<% end -%>\n"
            if kind == 2:
                return f"\n# {w.sentence()}\n"
            return f"<% @{a}.each do |{b}| -%>\n{c} <%= {b} %>\n<% end -%>\n"

        return fill(header, stanza, "", size)

    def ruby(self, name: str, size: int) -> bytes:
        w, rng = self.words, self.rng
        header = (f"# frozen_string_literal: true\n\n# {w.sentence()}\n"
                  f"module Puppet::Parser::Functions\n  newfunction(:{name}, type: :rvalue, "
                  f"doc: <<-DOC\n    {w.sentence()}\n  DOC\n  ) do |args|\n")

        def stanza() -> str:
            a, b, c = w.take(3)
            kind = rng.randrange(3)
            if kind == 0:
                return f"    {a} = args[{rng.randint(0, 3)}].to_s.strip\n"
            if kind == 1:
                return (f"    if {a}.nil? || {b}.empty?\n      raise Puppet::ParseError, "
                        f"\"{name}(): {w.sentence(3, 7)}\"\n    end\n")
            return f"    # {w.sentence()}\n    {a}_{b} = {c}.map {{ |x| x.downcase }}\n"

        return fill(header, stanza, "  end\nend\n", size)

    def spec(self, name: str, size: int) -> bytes:
        w, rng = self.words, self.rng
        header = f"# frozen_string_literal: true\n\nrequire 'spec_helper'\n\ndescribe '{name}' do\n"

        def stanza() -> str:
            a, b, c = w.take(3)
            if rng.random() < 0.5:
                return (f"  context 'with {a} => {b}' do\n    let(:params) {{ {{ {a}: '{b}' }} }}"
                        f"\n\n    it {{ is_expected.to compile.with_all_deps }}\n"
                        f"    it {{ is_expected.to contain_file('/etc/{c}/{a}.conf') }}\n  end\n\n")
            return (f"  it '{w.sentence(3, 8).lower()[:-1]}' do\n"
                    f"    is_expected.to contain_package('{a}-{b}').with_ensure('installed')\n"
                    f"  end\n\n")

        return fill(header, stanza, "end\n", size)

    def yaml(self, prefix: str, size: int) -> bytes:
        w, rng = self.words, self.rng

        def stanza() -> str:
            a, b, c, d = w.take(4)
            kind = rng.randrange(4)
            if kind == 0:
                return f"{prefix}::{a}_{b}: '{c}'\n"
            if kind == 1:
                return f"{prefix}::{a}::{b}: {rng.randint(1, 10000)}\n"
            if kind == 2:
                return f"{prefix}::{a}_{b}:\n  - '{c}'\n  - '{d}'\n"
            return f"# {w.sentence()}\n"

        return fill("---\n", stanza, "", size)

    def markdown(self, title: str, size: int) -> bytes:
        w, rng = self.words, self.rng

        def stanza() -> str:
            if rng.random() < 0.2:
                return f"## {w.sentence(2, 4)[:-1]}\n\n"
            return " ".join(w.sentence() for _ in range(rng.randint(2, 6))) + "\n\n"

        return fill(f"# {title}\n\n", stanza, "", size)

    def script(self, size: int) -> bytes:
        w, rng = self.words, self.rng

        def stanza() -> str:
            a, b, c = w.take(3)
            kind = rng.randrange(3)
            if kind == 0:
                return f"# {w.sentence()}\n"
            if kind == 1:
                return f"if [ -f \"/etc/{a}/{b}\" ]; then\n    {c} --{a} \"$1\"\nfi\n"
            return f"{a}_{b}=\"${{{c}:-{rng.randint(1, 99)}}}\"\n"

        return fill("#!/bin/sh\nset -eu\n\n", stanza, "exit 0\n", size)

    def config(self, size: int) -> bytes:
        w, rng = self.words, self.rng

        def stanza() -> str:
            a, b, c = w.take(3)
            if rng.random() < 0.15:
                return f"\n# {w.sentence()}\n[{a}]\n"
            return f"{a}.{b} = {c}\n"

        return fill("# Managed by Puppet.\n", stanza, "", size)

    def data(self, size: int) -> bytes:
        w, rng = self.words, self.rng

        def stanza() -> str:
            a, b, c = w.take(3)
            return (f"{rng.randint(1, 10**6)},{a},{b},{c},{rng.randint(0, 255)}."
                    f"{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)},"
                    f"{rng.random():.4f}\n")

        return fill("id,name,group,kind,address,weight\n", stanza, "", size)

    def metadata(self, module: str) -> bytes:
        document = {
            "name": f"example-{module}",
            "version": f"{self.rng.randint(0, 9)}.{self.rng.randint(0, 20)}.0",
            "author": "example", "summary": self.words.sentence(), "license": "Apache-2.0",
            "source": f"https://git.example.org/puppet/{module}",
            "dependencies": [{"name": "puppetlabs/stdlib", "version_requirement": ">= 4.13.1"}],
            "operatingsystem_support": [{"operatingsystem": "Debian",
                                         "operatingsystemrelease": ["11", "12"]}],
        }
        return (json.dumps(document, indent=2) + "\n").encode()


@dataclass
class Planned:
    """One file of the repository, before its content exists."""

    path: str
    style: str
    size: int = 0
    name: str = ""
    mode: str = "100644"


@dataclass
class Repository:
    """The generated remote and what the benchmark knows about it."""

    path: Path
    url: str
    files: dict[str, tuple[str, bytes]]  # path -> (mode, content) of the production commit
    branch_changes: dict[str, dict[str, bytes]]  # feature branch -> path -> content
    one_line_path: str
    commits: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


def _unique(rng: random.Random, words: Words, taken: set[str]) -> str:
    while True:
        name = words.ident()
        if name not in taken and name[0].isalpha():
            taken.add(name)
            return name


def plan_module(rng: random.Random, words: Words, root: str, module: str) -> list[Planned]:
    """The files of one Puppet module, in the usual layout."""
    planned = [
        Planned(f"{root}/manifests/init.pp", "manifest", name=module),
        Planned(f"{root}/manifests/params.pp", "manifest", name=f"{module}::params"),
        Planned(f"{root}/metadata.json", "metadata", name=module),
        Planned(f"{root}/README.md", "markdown", name=module),
        Planned(f"{root}/CHANGELOG.md", "markdown", name=f"{module} changes"),
        Planned(f"{root}/.fixtures.yml", "yaml", name="fixtures"),
        Planned(f"{root}/spec/spec_helper.rb", "ruby", name="spec_helper"),
    ]
    taken: set[str] = {"init", "params"}
    for _ in range(rng.randint(2, 14)):
        name = _unique(rng, words, taken)
        planned.append(Planned(f"{root}/manifests/{name}.pp", "manifest", name=f"{module}::{name}"))
        if rng.random() < 0.7:
            planned.append(Planned(f"{root}/spec/classes/{name}_spec.rb", "spec",
                                   name=f"{module}::{name}"))
    if rng.random() < 0.3:
        sub = _unique(rng, words, taken)
        for _ in range(rng.randint(1, 4)):
            name = _unique(rng, words, taken)
            planned.append(Planned(f"{root}/manifests/{sub}/{name}.pp", "manifest",
                                   name=f"{module}::{sub}::{name}"))
            planned.append(Planned(f"{root}/spec/defines/{sub}_{name}_spec.rb", "spec",
                                   name=f"{module}::{sub}::{name}"))
    for _ in range(rng.randint(1, 10)):
        planned.append(Planned(f"{root}/templates/{_unique(rng, words, taken)}.conf.erb",
                               "template"))
    for _ in range(rng.randint(0, 6)):
        planned.append(Planned(f"{root}/files/{_unique(rng, words, taken)}.conf", "config"))
    if rng.random() < 0.05:
        planned.append(Planned(f"{root}/files/{_unique(rng, words, taken)}.sh", "script",
                               mode="100755"))
    if rng.random() < 0.4:
        for _ in range(rng.randint(1, 3)):
            name = f"{module}_{_unique(rng, words, taken)}"
            planned.append(Planned(f"{root}/lib/puppet/parser/functions/{name}.rb", "ruby",
                                   name=name))
            planned.append(Planned(f"{root}/spec/functions/{name}_spec.rb", "spec", name=name))
    if rng.random() < 0.3:
        for _ in range(rng.randint(1, 2)):
            name = f"{module}_{_unique(rng, words, taken)}"
            planned.append(Planned(f"{root}/lib/puppet/type/{name}.rb", "ruby", name=name))
            for _ in range(rng.randint(1, 2)):
                impl = _unique(rng, words, taken)
                planned.append(Planned(f"{root}/lib/puppet/provider/{name}/{impl}.rb", "ruby",
                                       name=impl))
            planned.append(Planned(f"{root}/spec/unit/puppet/type/{name}_spec.rb", "spec",
                                   name=name))
    if rng.random() < 0.3:
        for _ in range(rng.randint(1, 3)):
            name = f"{module}_{_unique(rng, words, taken)}"
            planned.append(Planned(f"{root}/lib/facter/{name}.rb", "ruby", name=name))
    for _ in range(rng.randint(0, 3)):
        name = _unique(rng, words, taken)
        planned.append(Planned(f"{root}/examples/{name}.pp", "manifest", name=f"{module}::{name}"))
    return planned


def plan_repository(rng: random.Random, words: Words, shape: Shape) -> list[Planned]:
    """Every regular file of the production tree (symlinks and large files come later)."""
    planned = [
        Planned("manifests/site.pp", "manifest", name="site"),
        Planned("environment.conf", "config"),
        Planned("hiera.yaml", "yaml", name="hiera"),
        Planned("README.md", "markdown", name="Puppet control repository"),
        Planned("Rakefile", "ruby", name="rake"),
        Planned("Gemfile", "ruby", name="gems"),
        Planned(".gitignore", "config"),
        Planned(".gitlab-ci.yml", "yaml", name="ci"),
        Planned("scripts/deploy.sh", "script", mode="100755"),
        Planned("scripts/lint.sh", "script", mode="100755"),
        Planned("scripts/update_nodes.sh", "script", mode="100755"),
    ]
    modules = list(MODULE_NAMES)
    taken = set(modules)
    while len(modules) < shape.modules:
        modules.append(_unique(rng, words, taken))
    for module in modules[:shape.modules]:
        planned += plan_module(rng, words, f"modules/{module}", module)
    for kind, count in (("profile", shape.profiles), ("role", shape.roles)):
        taken = set()
        for _ in range(count):
            name = _unique(rng, words, taken)
            planned.append(Planned(f"site/{kind}/manifests/{name}.pp", "manifest",
                                   name=f"{kind}::{name}"))
            if rng.random() < 0.6:
                planned.append(Planned(f"site/{kind}/spec/classes/{name}_spec.rb", "spec",
                                       name=f"{kind}::{name}"))
            if kind == "role":
                planned.append(Planned(f"hieradata/roles/{name}.yaml", "yaml", name=name))
    for data in ("common", "os/Debian", "os/RedHat", *(f"datacenter/dc{n}" for n in range(4))):
        planned.append(Planned(f"hieradata/{data}.yaml", "yaml", name="profile"))
    taken = set()
    room = shape.files - len(planned) - shape.large_files - len(SYMLINKS)
    for number in range(max(room, 30)):
        host = f"{_unique(rng, words, taken)}{number % 100:02d}.dc{number % 4}.example.org"
        planned.append(Planned(f"hieradata/nodes/{host}.yaml", "yaml", name="profile"))
    return planned


# (link, relative target); targets are made to exist by add_symlinks.
SYMLINKS = (
    ("hieradata/os/Ubuntu.yaml", "Debian.yaml"),
    ("scripts/deploy", "deploy.sh"),
    ("{module}/templates/legacy.conf.erb", "{template}"),
    ("{module}/files/templates", "../templates"),
    ("site/profile/README.md", "../../README.md"),
    ("hieradata/nodes/default.yaml", "../common.yaml"),
)


def assign_sizes(rng: random.Random, planned: list[Planned], budget: int) -> None:
    """Give each file a log-normal size (median about 3.5 KB) scaled to fill ``budget``."""
    small = {"metadata", "yaml"}
    raw = []
    for item in planned:
        median = 900 if item.style in small else 3500
        raw.append(min(max(rng.lognormvariate(0, 1.0) * median, 120), 120_000))
    scale = budget / sum(raw)
    for item, size in zip(planned, raw, strict=True):
        item.size = max(80, int(size * scale))


def render(writer: Writer, item: Planned) -> bytes:
    """The content of one planned file."""
    styles: dict[str, Callable[[], bytes]] = {
        "manifest": lambda: writer.manifest(item.name, item.size),
        "template": lambda: writer.template(item.size),
        "ruby": lambda: writer.ruby(item.name, item.size),
        "spec": lambda: writer.spec(item.name, item.size),
        "yaml": lambda: writer.yaml(item.name or "profile", item.size),
        "markdown": lambda: writer.markdown(item.name, item.size),
        "script": lambda: writer.script(item.size),
        "config": lambda: writer.config(item.size),
        "data": lambda: writer.data(item.size),
        "metadata": lambda: writer.metadata(item.name),
    }
    return styles[item.style]()


def generate_tree(shape: Shape) -> dict[str, tuple[str, bytes]]:
    """The production tree: path -> (git mode, content); fixed seed, same tree every run."""
    rng = random.Random(SEED)  # noqa: S311 - reproducible test data, not secrets
    words = Words.create(rng)
    writer = Writer(rng, words)
    planned = plan_repository(rng, words, shape)
    large_budget = shape.large_files * 400 * 1024
    assign_sizes(rng, planned, shape.tree_bytes - large_budget)
    tree = {item.path: (item.mode, render(writer, item)) for item in planned}
    used = sum(len(content) for _, content in tree.values())
    add_large_files(rng, writer, tree, shape, shape.tree_bytes - used)
    add_symlinks(rng, tree)
    return tree


def add_large_files(rng: random.Random, writer: Writer, tree: dict[str, tuple[str, bytes]],
                    shape: Shape, budget: int) -> None:
    """A handful of data files of a few hundred KB that bring the tree to its size."""
    modules = sorted({path.split("/")[1] for path in tree if path.startswith("modules/")})
    shares = [rng.uniform(0.5, 1.5) for _ in range(shape.large_files)]
    for number, share in enumerate(shares):
        size = max(100 * 1024, int(budget * share / sum(shares)))
        module = rng.choice(modules)
        path = f"modules/{module}/files/{writer.words.ident()}_{number:02d}.csv"
        tree[path] = ("100644", writer.data(size))


def add_symlinks(rng: random.Random, tree: dict[str, tuple[str, bytes]]) -> None:
    """A few relative symlinks, to files and to a directory, as real repositories have."""
    templates = sorted(p for p in tree if p.startswith("modules/") and p.endswith(".conf.erb"))
    chosen = rng.choice(templates)
    module = "/".join(chosen.split("/")[:2])
    for link, target in SYMLINKS:
        path = link.format(module=module)
        tree[path] = ("120000", target.format(template=chosen.rsplit("/", 1)[1]).encode())


def tree_statistics(tree: dict[str, tuple[str, bytes]]) -> dict[str, Any]:
    directories = {"/".join(path.split("/")[:depth]) for path in tree
                   for depth in range(1, path.count("/") + 1)}
    return {
        "files": len(tree),
        "regular_files": sum(mode != "120000" for mode, _ in tree.values()),
        "executables": sum(mode == "100755" for mode, _ in tree.values()),
        "symlinks": sum(mode == "120000" for mode, _ in tree.values()),
        "directories": len(directories),
        "tree_mb": sum(len(content) for _, content in tree.values()) / MB,
    }


def change_lines(content: bytes, changes: dict[int, str]) -> bytes:
    """``content`` with the lines numbered in ``changes`` replaced."""
    lines = content.split(b"\n")
    for number, text in changes.items():
        lines[number] = text.encode()
    return b"\n".join(lines)


def modifiable(tree: dict[str, tuple[str, bytes]]) -> list[str]:
    """Ordinary text files of a few lines or more that a small commit may touch."""
    return sorted(path for path, (mode, content) in tree.items()
                  if mode == "100644" and not path.endswith(".csv") and content.count(b"\n") > 8)


def feature_changes(rng: random.Random, tree: dict[str, tuple[str, bytes]]
                    ) -> dict[str, dict[str, bytes]]:
    """Each feature branch's commit: a few changed lines in 1 to 3 files."""
    candidates = modifiable(tree)
    changes: dict[str, dict[str, bytes]] = {}
    for number in range(1, FEATURE_BRANCHES + 1):
        branch = f"feature_{number:02d}"
        changed = {}
        for path in rng.sample(candidates, rng.randint(1, 3)):
            content = tree[path][1]
            lines = content.count(b"\n")
            picked = rng.sample(range(1, lines - 1), rng.randint(1, 3))
            changed[path] = change_lines(content, {
                line: f"# {branch}: change {index} of line {line}"
                for index, line in enumerate(picked)})
        changes[branch] = changed
    return changes


def _data(payload: bytes) -> bytes:
    return b"data %d\n" % len(payload) + payload + b"\n"


def _commit_header(ref: str, when: int, message: str) -> bytes:
    return (f"commit {ref}\ncommitter {IDENTITY} {when} +0000\n".encode()
            + _data(message.encode()))


def write_import_stream(stream_path: Path, tree: dict[str, tuple[str, bytes]],
                        changes: dict[str, dict[str, bytes]]) -> None:
    """A ``git fast-import`` stream: the production commit, then one commit per feature."""
    with stream_path.open("wb") as stream:
        marks: dict[str, int] = {}
        for number, path in enumerate(sorted(tree), start=1):
            marks[path] = number
            stream.write(b"blob\nmark :%d\n" % number + _data(tree[path][1]))
        production_mark = len(marks) + 1
        stream.write(_commit_header("refs/heads/production", BASE_TIME, "Initial import")
                     .replace(b"\ncommitter", b"\nmark :%d\ncommitter" % production_mark, 1))
        for path in sorted(tree):
            stream.write(f"M {tree[path][0]} :{marks[path]} {path}\n".encode())
        stream.write(b"\n")
        for number, (branch, changed) in enumerate(sorted(changes.items()), start=1):
            stream.write(_commit_header(f"refs/heads/{branch}", BASE_TIME + number,
                                        f"{branch}: small change"))
            stream.write(b"from :%d\n" % production_mark)
            for path, content in sorted(changed.items()):
                stream.write(f"M 100644 inline {path}\n".encode() + _data(content))
            stream.write(b"\n")


def git(*arguments: str, timeout: float = GIT_TIMEOUT, stdin: Any = None) -> bytes:
    """Run git; its stdout. Raises BenchmarkError on failure or timeout."""
    try:
        result = subprocess.run(["git", *arguments], stdin=stdin, capture_output=True,
                                timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"git {' '.join(arguments[:3])} timed out") from None
    if result.returncode != 0:
        raise BenchmarkError(f"git {' '.join(arguments)} failed: "
                             f"{result.stderr.decode(errors='replace')[-1500:]}")
    return result.stdout


def disk_kib(*paths: Path) -> int:
    """``du -skc`` over ``paths``: KiB on disk, each hard-linked inode once."""
    try:
        result = subprocess.run(["du", "-skc", *map(str, paths)], capture_output=True, text=True,
                                timeout=QUICK_TIMEOUT * 10, check=False)
    except subprocess.TimeoutExpired:
        raise BenchmarkError("du timed out") from None
    if result.returncode != 0:
        raise BenchmarkError(f"du failed: {result.stderr.strip()[-500:]}")
    return int(result.stdout.strip().splitlines()[-1].split()[0])


def build_repository(workdir: Path, shape: Shape) -> Repository:
    """Generate the tree and write the bare remote with git fast-import; prints its size."""
    started = time.perf_counter()
    tree = generate_tree(shape)
    rng = random.Random(SEED + 1)  # noqa: S311 - reproducible test data, not secrets
    changes = feature_changes(rng, tree)
    generated = time.perf_counter()
    remote = workdir / "remote.git"
    git("init", "--quiet", "--bare", str(remote))
    git(f"--git-dir={remote}", "symbolic-ref", "HEAD", "refs/heads/production")
    stream_path = workdir / "import.stream"
    write_import_stream(stream_path, tree, changes)
    with stream_path.open("rb") as stream:
        git(f"--git-dir={remote}", "fast-import", "--quiet", stdin=stream)
    stream_path.unlink()
    imported = time.perf_counter()
    git(f"--git-dir={remote}", "repack", "-a", "-d", "-q")  # as a served repository is
    git(f"--git-dir={remote}", "prune-packed")
    packed = time.perf_counter()
    stats = tree_statistics(tree)
    stats["bare_repo_mb"] = disk_kib(remote) / MB * 1024
    stats["branches"] = 1 + len(changes)
    one_line_path = next(p for p in modifiable(tree) if p.startswith("site/profile/manifests/"))
    print(f"repository: {stats['files']:,} files ({stats['regular_files']:,} regular, "
          f"{stats['executables']} executable, {stats['symlinks']} symlinks) in "
          f"{stats['directories']:,} directories, {stats['tree_mb']:.1f} MB in the tree; "
          f"bare repository {stats['bare_repo_mb']:.1f} MB; {stats['branches']} branches")
    print(f"  generate {generated - started:.1f} s   fast-import {imported - generated:.1f} s   "
          f"repack {packed - imported:.1f} s")
    return Repository(remote, remote.as_uri(), tree, changes, one_line_path, stats=stats)


def push_one_line_change(repository: Repository, number: int) -> bytes:
    """Commit a one-line change to production on the remote; the file's new content."""
    path = repository.one_line_path
    mode, content = repository.files[path]
    changed = change_lines(content, {1: f"# one-line change {number}"})
    repository.files[path] = (mode, changed)
    repository.commits += 1
    stream = (_commit_header("refs/heads/production", BASE_TIME + 1000 + number,
                             f"One-line change {number}")
              + b"from refs/heads/production^0\n"
              + f"M {mode} inline {path}\n".encode() + _data(changed) + b"\n")
    with tempfile.TemporaryFile() as handle:
        handle.write(stream)
        handle.seek(0)
        git(f"--git-dir={repository.path}", "fast-import", "--quiet", stdin=handle)
    return changed


# --- listings and checks -------------------------------------------------------------------

# path -> ("dir", None) | ("file", (executable, size)) | ("link", target)
Listing = dict[str, tuple[str, Any]]


def archive_listing(remote: Path, commit: str) -> Listing:
    """What ``git archive`` says ``commit`` holds: directories, files and symlinks."""
    with tempfile.TemporaryFile() as archive:
        try:
            subprocess.run(["git", f"--git-dir={remote}", "archive", "--format=tar", commit],
                           stdout=archive, stderr=subprocess.PIPE, timeout=GIT_TIMEOUT,
                           check=True)
        except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as error:
            raise BenchmarkError(f"git archive {commit} failed: {error}") from None
        archive.seek(0)
        listing: Listing = {}
        with tarfile.open(fileobj=archive, mode="r:") as tar:
            for member in tar:
                if member.type == tarfile.XGLTYPE:  # the pax header with the commit id
                    continue
                path = member.name.rstrip("/")
                if member.isdir():
                    listing[path] = ("dir", None)
                elif member.issym():
                    listing[path] = ("link", member.linkname)
                else:
                    listing[path] = ("file", (bool(member.mode & 0o111), member.size))
    return listing


def tree_listing(root: Path, ignore: Sequence[str] = ()) -> Listing:
    """The same listing of a deployed environment, following only its top-level link."""
    listing: Listing = {}
    pending = [(root, "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                path = prefix + entry.name
                if path in ignore:
                    continue
                if entry.is_symlink():
                    listing[path] = ("link", os.readlink(entry.path))
                elif entry.is_dir(follow_symlinks=False):
                    listing[path] = ("dir", None)
                    pending.append((Path(entry.path), path + "/"))
                else:
                    info = entry.stat(follow_symlinks=False)
                    listing[path] = ("file", (bool(info.st_mode & 0o111), info.st_size))
    return listing


def compare_listings(expected: Listing, actual: Listing) -> list[str]:
    """Differences between two listings, worst first, at most a few of each kind."""
    problems = [f"missing {path}" for path in sorted(expected.keys() - actual.keys())][:5]
    problems += [f"unexpected {path}" for path in sorted(actual.keys() - expected.keys())][:5]
    problems += [f"{path}: expected {expected[path]}, found {actual[path]}"
                 for path in sorted(expected.keys() & actual.keys())
                 if expected[path] != actual[path]][:5]
    return problems


def check_tree(tool: str, remote: Path, commit: str, root: Path, fatal: bool) -> None:
    """Compare a deployed tree with ``git archive`` of its commit."""
    ignore = (".git", ".r10k-deploy.json") if tool == "r10k" else ()
    problems = compare_listings(archive_listing(remote, commit), tree_listing(root, ignore))
    if not problems:
        print(f"  check: {tool} {root.name} matches git archive {commit} "
              "(paths, exec bits, symlink targets, sizes)")
        return
    message = f"{tool} {root.name} differs from git archive {commit}: " + "; ".join(problems)
    if fatal:
        raise WrongResult(message)
    print(f"  WARNING: {message}")


def check_content(tool: str, path: Path, expected: bytes, fatal: bool) -> None:
    try:
        actual = path.read_bytes()
    except OSError as error:
        actual = f"<{error}>".encode()
    if actual == expected:
        return
    message = f"{tool}: {path} does not hold the expected content"
    if fatal:
        raise WrongResult(message)
    print(f"  WARNING: {message}")


def check_opslab_output(stdout: str, expected: dict[str, str]) -> None:
    """Each ``environment: result`` in ``expected`` must appear in opslab's output."""
    results = {}
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            results[fields[1]] = fields[0]
    wrong = {env: results.get(env) for env, result in expected.items()
             if results.get(env) != result}
    if wrong or len(results) != len(expected):
        raise WrongResult(f"opslab reported {results}, expected {expected}")


def check_opslab_link(environments: Path, environment: str) -> None:
    link = environments / environment
    if not link.is_symlink() or not str(os.readlink(link)).startswith(".opslab/trees/"):
        raise WrongResult(f"opslab: {link} is not a symlink into .opslab/trees")


# --- running the tools ---------------------------------------------------------------------


@dataclass
class Run:
    """One whole process: wall time, CPU time, what it said; returncode None if it timed out.

    ``cpu`` is user + system time of the process and every descendant it
    waited for (git, for both tools), from getrusage(RUSAGE_CHILDREN): far
    less noisy than wall time on a shared machine, and blind to I/O waits.
    """

    seconds: float
    cpu: float
    returncode: int | None
    stdout: str
    stderr: str


def run(command: Sequence[str], timeout: float, environment: dict[str, str],
        cwd: Path) -> Run:
    """Run ``command`` to completion (its whole process group killed at ``timeout``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=environment, cwd=cwd,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        returncode: int | None = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=QUICK_TIMEOUT)
        returncode = None
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(seconds, cpu, returncode, stdout.decode(errors="replace"),
               stderr.decode(errors="replace"))


def succeeded(result: Run, what: str) -> Run:
    """``result`` if it exited 0; else BenchmarkError with its output."""
    if result.returncode != 0:
        status = "timed out" if result.returncode is None else f"exited {result.returncode}"
        raise BenchmarkError(f"{what} {status} after {result.seconds:.1f} s:\n"
                             f"{result.stdout[-1500:]}{result.stderr[-2500:]}")
    return result


def find_r10k() -> str:
    path = shutil.which("r10k")
    if path is None:
        raise BenchmarkError("r10k not found (Debian: apt-get install r10k)")
    return path


@dataclass
class Workspace:
    """One tool's environments and cache directories for one phase."""

    tool: str
    root: Path
    environments: Path
    cache: Path
    one: list[str]
    all: list[str]


def make_workspace(workdir: Path, tool: str, phase: str, executable: str,
                   repository: Repository) -> Workspace:
    """Fresh, empty directories for ``tool`` and the commands that deploy into them."""
    root = workdir / f"{tool}-{phase}"
    environments, cache = root / "environments", root / "cache"
    environments.mkdir(parents=True)
    cache.mkdir()
    if tool == "opslab":
        base = [executable, "branch", "sync", "--remote", repository.url,
                "--environments", str(environments), "--cache", str(cache)]
    else:
        config = root / "r10k.yaml"
        config.write_text(
            f":cachedir: {json.dumps(str(cache))}\n"
            f"sources:\n  bench:\n    remote: {json.dumps(repository.url)}\n"
            f"    basedir: {json.dumps(str(environments))}\n", encoding="utf-8")
        base = [executable, "deploy", "environment", "-c", str(config)]
    return Workspace(tool, root, environments, cache, [*base, "production"], base)


def count_files(*roots: Path) -> dict[str, int]:
    """Directory entries below ``roots`` (not following symlinks), and distinct file inodes."""
    counts = {"files": 0, "symlinks": 0, "directories": 0}
    inodes: set[tuple[int, int]] = set()
    pending = list(roots)
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    counts["symlinks"] += 1
                elif entry.is_dir(follow_symlinks=False):
                    counts["directories"] += 1
                    pending.append(Path(entry.path))
                else:
                    counts["files"] += 1
                    info = entry.stat(follow_symlinks=False)
                    inodes.add((info.st_dev, info.st_ino))
    counts["file_inodes"] = len(inodes)
    return counts


# --- the measurements ----------------------------------------------------------------------


@dataclass
class Bench:
    """Everything the measurements share."""

    workdir: Path
    repository: Repository
    executables: dict[str, str]
    environment: dict[str, str]
    all_timeout: float
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    cpu: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, measure: str, tool: str, result: Run) -> None:
        self.samples.setdefault(measure, {}).setdefault(tool, []).append(result.seconds)
        self.cpu.setdefault(measure, {}).setdefault(tool, []).append(result.cpu)

    def deploy(self, command: list[str], timeout: float = DEPLOY_TIMEOUT) -> Run:
        """Run one deploy command as a measured process, on a settled disk.

        os.sync() first, untimed: what the previous command (or the repository
        generator) left for the kernel to write back is written now, not
        during this command's fsync calls. A tool's own write-back still counts
        where the tool itself waits for it.
        """
        os.sync()
        return run(command, timeout, self.environment, self.workdir)


TOOLS = ("opslab", "r10k")


def rotated(round_number: int) -> list[str]:
    """Both tools, a different one first each round."""
    shift = round_number % len(TOOLS)
    return [*TOOLS[shift:], *TOOLS[:shift]]


def measure_first_deploy(bench: Bench) -> dict[str, Workspace]:
    """(a) production from cold, in fresh directories each time, interleaved.

    Returns the last round's workspaces, which (b) and (c) go on with.
    """
    print(f"\n(a) first deploy of production, from cold ({FIRST_RUNS} runs each)")
    spaces: dict[str, Workspace] = {}
    for round_number in range(FIRST_RUNS):
        for tool in rotated(round_number):
            if tool in spaces:
                shutil.rmtree(spaces[tool].root)
            space = make_workspace(bench.workdir, tool, f"first-{round_number}",
                                   bench.executables[tool], bench.repository)
            result = succeeded(bench.deploy(space.one), f"{tool} first deploy")
            if tool == "opslab":
                check_opslab_output(result.stdout, {"production": "deployed"})
            bench.record("first", tool, result)
            spaces[tool] = space
    show_samples(bench, "first")
    remote = bench.repository.path
    check_opslab_link(spaces["opslab"].environments, "production")
    for tool in TOOLS:
        check_tree(tool, remote, "production", spaces[tool].environments / "production",
                   fatal=tool == "opslab")
    return spaces


def measure_no_change(bench: Bench, spaces: dict[str, Workspace]) -> None:
    """(b) redeploy production with nothing changed, interleaved."""
    print(f"\n(b) redeploy production, nothing changed ({NO_CHANGE_RUNS} runs each)")
    for round_number in range(NO_CHANGE_RUNS):
        for tool in rotated(round_number):
            space = spaces[tool]
            result = succeeded(bench.deploy(space.one), f"{tool} no-change redeploy")
            if tool == "opslab":
                check_opslab_output(result.stdout, {"production": "unchanged"})
            bench.record("no_change", tool, result)
    show_samples(bench, "no_change")


def measure_one_line(bench: Bench, spaces: dict[str, Workspace]) -> None:
    """(c) a fresh one-line commit to production, then redeploy it, interleaved."""
    print(f"\n(c) redeploy production after a one-line commit ({ONE_LINE_RUNS} runs each)")
    path = bench.repository.one_line_path
    for round_number in range(ONE_LINE_RUNS):
        expected = push_one_line_change(bench.repository, round_number + 1)
        for tool in rotated(round_number):
            space = spaces[tool]
            result = succeeded(bench.deploy(space.one), f"{tool} one-line redeploy")
            if tool == "opslab":
                check_opslab_output(result.stdout, {"production": "deployed"})
            check_content(tool, space.environments / "production" / path, expected,
                          fatal=tool == "opslab")
            bench.record("one_line", tool, result)
    print(f"  check: the changed line of {path} is deployed after every run")
    show_samples(bench, "one_line")


def measure_all(bench: Bench) -> None:
    """(d) every branch from cold: wall time, disk, file counts."""
    branches = ["production", *sorted(bench.repository.branch_changes)]
    print(f"\n(d) all {len(branches)} branches from cold")
    for tool in TOOLS:
        space = make_workspace(bench.workdir, tool, "all", bench.executables[tool],
                               bench.repository)
        result = bench.deploy(space.all, timeout=bench.all_timeout)
        timed_out = result.returncode is None
        if tool == "opslab" or not timed_out:  # r10k alone may be reported as "> N s"
            succeeded(result, f"{tool} deploy of all branches")
        bench.record("all_wall", tool, result)
        kib = disk_kib(space.environments, space.cache)
        counts = count_files(space.environments, space.cache)
        bench.extra[tool] = {"all_timed_out": timed_out, "all_disk_mb": kib / 1024, **counts}
        print(f"  {tool:7} {'>' if timed_out else ' '}{result.seconds:8.1f} s "
              f"(CPU {result.cpu:.1f} s)   "
              f"{kib / 1024:8.1f} MB on disk   {counts['files']:,} files "
              f"({counts['file_inodes']:,} distinct inodes), {counts['symlinks']:,} symlinks, "
              f"{counts['directories']:,} directories")
        if tool == "opslab":
            check_all_opslab(bench, space, result.stdout, branches)
        else:
            check_all_r10k(space, branches, timed_out)
        shutil.rmtree(space.root, ignore_errors=True)


def check_all_opslab(bench: Bench, space: Workspace, stdout: str, branches: list[str]) -> None:
    """41 environments, each with its branch's own change; one compared in full."""
    environments = {environment_for_branch(branch): branch for branch in branches}
    check_opslab_output(stdout, dict.fromkeys(environments, "deployed"))
    present = {entry.name for entry in space.environments.iterdir()
               if not entry.name.startswith(".")}
    if present != set(environments):
        raise WrongResult(f"opslab deployed {sorted(present)}, expected {sorted(environments)}")
    for environment, branch in environments.items():
        check_opslab_link(space.environments, environment)
        for path, content in bench.repository.branch_changes.get(branch, {}).items():
            check_content("opslab", space.environments / environment / path, content, fatal=True)
    production_path = bench.repository.one_line_path
    check_content("opslab", space.environments / "production" / production_path,
                  bench.repository.files[production_path][1], fatal=True)
    check_tree("opslab", bench.repository.path, "feature_01",
               space.environments / "feature_01", fatal=True)
    print(f"  check: opslab deployed all {len(environments)} environments, "
          "each with its branch's own change")


def check_all_r10k(space: Workspace, branches: list[str], timed_out: bool) -> None:
    present = {entry.name for entry in space.environments.iterdir() if entry.is_dir()}
    if len(present) != len(branches) and not timed_out:
        print(f"  WARNING: r10k deployed {len(present)} environments, expected {len(branches)}")
    elif timed_out:
        print(f"  r10k timed out after {len(present)} of {len(branches)} environments; "
              "disk and file counts are of what it had done by then")


def show_samples(bench: Bench, measure: str) -> None:
    """Each tool's median and every run, wall time and CPU time."""
    for tool in TOOLS:
        samples, cpu = bench.samples[measure][tool], bench.cpu[measure][tool]
        print(f"  {tool:7} median {statistics.median(samples):8.3f} s   "
              f"runs {' '.join(f'{s:.3f}' for s in samples)}   "
              f"(CPU median {statistics.median(cpu):.3f} s)")


# --- the report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    opslab: float
    r10k: float
    unit: str
    target: str
    passed: bool
    reference: str
    r10k_note: str = ""


def build_rows(bench: Bench) -> list[Row]:
    def median(measure: str, tool: str) -> float:
        return statistics.median(bench.samples[measure][tool])

    first_o, first_r = median("first", "opslab"), median("first", "r10k")
    none_o, none_r = median("no_change", "opslab"), median("no_change", "r10k")
    line_o, line_r = median("one_line", "opslab"), median("one_line", "r10k")
    all_o, all_r = median("all_wall", "opslab"), median("all_wall", "r10k")
    disk_o, disk_r = bench.extra["opslab"]["all_disk_mb"], bench.extra["r10k"]["all_disk_mb"]
    late = ">" if bench.extra["r10k"]["all_timed_out"] else ""
    return [
        Row(f"first deploy, cold (median of {FIRST_RUNS})", first_o, first_r, "s", "<= r10k",
            first_o <= first_r, REFERENCE_R10K["first"]),
        Row(f"redeploy, nothing changed (median of {NO_CHANGE_RUNS})", none_o, none_r, "s",
            f"< {TARGET_NO_CHANGE_S:g} s", none_o < TARGET_NO_CHANGE_S,
            REFERENCE_R10K["no_change"]),
        Row(f"redeploy, one-line change (median of {ONE_LINE_RUNS})", line_o, line_r, "s",
            f"< {TARGET_ONE_LINE_S:g} s", line_o < TARGET_ONE_LINE_S, REFERENCE_R10K["one_line"]),
        Row("all 41 branches from cold, wall", all_o, all_r, "s", f"< {TARGET_ALL_S:g} s",
            all_o < TARGET_ALL_S, REFERENCE_R10K["all_wall"], late),
        Row("all 41 branches, disk (envs + cache)", disk_o, disk_r, "MB",
            f"< {TARGET_ALL_MB:g} MB", disk_o < TARGET_ALL_MB, REFERENCE_R10K["all_disk"], late),
    ]


def format_value(value: float, unit: str, note: str = "") -> str:
    digits = 3 if unit == "s" and value < 10 else 1
    return f"{note}{value:.{digits}f} {unit}"


def print_report(bench: Bench, rows: list[Row], quick: bool) -> None:
    print("\nresults" + (" (--quick: a 1/10 repository; the targets are for the full size)"
                         if quick else ""))
    header = (f"{'measure':44} {'opslab':>11} {'r10k':>12} {'r10k/opslab':>11}  "
              f"{'target':>10} {'result':>6}  {'r10k, reference machine':>23}")
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = row.r10k / row.opslab if row.opslab > 0 else float("inf")
        print(f"{row.label:44} {format_value(row.opslab, row.unit):>11} "
              f"{format_value(row.r10k, row.unit, row.r10k_note):>12} "
              f"{row.r10k_note}{ratio:>9.1f}x  {row.target:>10} "
              f"{'PASS' if row.passed else 'FAIL':>6}  {row.reference:>23}")
    print("CPU time (user + system, with git), medians: " + "; ".join(
        f"{label} {statistics.median(bench.cpu[measure]['opslab']):.2f} s vs "
        f"{statistics.median(bench.cpu[measure]['r10k']):.2f} s"
        for measure, label in (("first", "first"), ("no_change", "nothing changed"),
                               ("one_line", "one line"), ("all_wall", "all 41"))))
    for tool in TOOLS:
        extra = bench.extra[tool]
        print(f"all 41 branches, {tool:6}: {extra['files']:,} files, "
              f"{extra['file_inodes']:,} distinct file inodes, {extra['symlinks']:,} symlinks, "
              f"{extra['directories']:,} directories (environments + cache)")
    passed = sum(row.passed for row in rows)
    print(f"\n{passed} of {len(rows)} targets met")


def results_document(bench: Bench, rows: list[Row], quick: bool,
                     versions: dict[str, str]) -> dict[str, Any]:
    return {
        "quick": quick,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), **versions},
        "repository": bench.repository.stats,
        "samples_s": bench.samples,
        "cpu_s": bench.cpu,
        "all_branches": bench.extra,
        "targets": [{"measure": row.label, "opslab": row.opslab, "r10k": row.r10k,
                     "unit": row.unit, "target": row.target, "passed": row.passed,
                     "r10k_reference": row.reference} for row in rows],
    }


# --- main ----------------------------------------------------------------------------------


def versions_and_warm_up(executables: dict[str, str], environment: dict[str, str],
                         cwd: Path) -> dict[str, str]:
    """Untimed: fill the bytecode cache and page cache; the tools' versions."""
    opslab = executables["opslab"]
    for command in ([opslab, "--help"], [opslab, "branch", "sync", "--help"]):
        succeeded(run(command, QUICK_TIMEOUT, environment, cwd), " ".join(command[1:]))
    r10k = succeeded(run([executables["r10k"], "version"], QUICK_TIMEOUT, environment, cwd),
                     "r10k version")
    git_version = git("--version", timeout=QUICK_TIMEOUT).decode().strip()
    return {"python": platform.python_version(), "git": git_version,
            "r10k": r10k.stdout.strip()}


def benchmark(arguments: argparse.Namespace, workdir: Path) -> int:
    executables = {"opslab": find_script("opslab"), "r10k": find_r10k()}
    # No stray opslab configuration or git repository variables in the tools' way.
    environment = bytecode_environment(workdir / "pycache",
                                       drop=("OPSLAB_CONFIG", *GIT_REPOSITORY_VARIABLES))
    versions = versions_and_warm_up(executables, environment, workdir)
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}; Python "
          f"{versions['python']}, {versions['git']}, {versions['r10k']}")
    print(f"opslab: {executables['opslab']}   r10k: {executables['r10k']}")
    if os.path.exists("/etc/opslab/opslab.yaml"):
        print("note: /etc/opslab/opslab.yaml exists; opslab reads it (the command line overrides "
              "remote, environments and cache)")
    repository = build_repository(workdir, QUICK if arguments.quick else FULL)
    bench = Bench(workdir, repository, executables, environment, arguments.all_timeout)
    spaces = measure_first_deploy(bench)
    measure_no_change(bench, spaces)
    measure_one_line(bench, spaces)
    for space in spaces.values():
        shutil.rmtree(space.root, ignore_errors=True)
    measure_all(bench)
    rows = build_rows(bench)
    print_report(bench, rows, arguments.quick)
    if arguments.json:
        Path(arguments.json).write_text(
            json.dumps(results_document(bench, rows, arguments.quick, versions), indent=2) + "\n",
            encoding="utf-8")
        print(f"results written to {arguments.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        help="a repository a tenth of the size, for a smoke run")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (printed at the end)")
    parser.add_argument("--all-timeout", type=float, default=ALL_TIMEOUT, metavar="SECONDS",
                        help=f"give up on one deploy of all branches after this long "
                        f"(default {ALL_TIMEOUT:g}; a timed-out r10k is reported as '> N s')")
    arguments = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="opslab-branch-bench-"))
    try:
        return benchmark(arguments, workdir)
    except WrongResult as error:
        print(f"\nopslab's result is WRONG: {error}", file=sys.stderr)
        return 1
    except BenchmarkError as error:
        print(f"\nthe benchmark could not run: {error}", file=sys.stderr)
        return 1
    finally:
        if arguments.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""``opslab-enc CERTNAME``: the command Puppet's ``external_nodes`` setting runs.

Contract with Puppet's exec node terminus: the classification as YAML on
stdout and exit 0; anything else is a non-zero exit with nothing on stdout.
Every diagnostic goes to stderr. Exit codes:

  0  classified (from the directory, or from the cache while it is down)
  1  unknown node: the directory has no entry for it
  2  bad usage, bad certname or bad configuration
  3  the directory is unavailable and no usable cached answer exists
  4  the directory answered but the node cannot be classified
     (inconsistent entries, refused credentials, missing base DN)
 70  an internal error (a bug): the traceback is on stderr
"""

import argparse
import logging
import sys
import traceback

from opslab import __version__
from opslab.config import Config, ConfigError, add_config_option, load
from opslab.directory import Directory, DirectoryError, DirectoryUnavailable
from opslab.log import setup
from opslab.names import InvalidName, validate_certname

from .cache import CacheError, ClassificationCache
from .classifier import ClassificationError, Classifier, UnknownNode
from .render import explain, to_yaml

log = logging.getLogger("opslab.enc")
EXIT_UNKNOWN_NODE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_UNCLASSIFIABLE = 4
EXIT_INTERNAL_ERROR = 70  # sysexits.h EX_SOFTWARE



def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="opslab-enc",
        description="Puppet external node classifier reading the opslab LDAP directory.",
    )
    parser.add_argument("certname", help="the node's certname, as Puppet passes it")
    add_config_option(parser)
    parser.add_argument("--explain", action="store_true",
                        help="print where every class and variable comes from, for people")
    parser.add_argument("--version", action="version", version=f"opslab {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the ENC; returns the process exit status."""
    arguments = _arguments(argv)
    setup(prefix="opslab-enc")
    try:
        return _classify(arguments)
    except Exception:
        # Not exit 1, which Puppet's users read as "unknown node".
        log.critical("internal error, please report:\n%s", traceback.format_exc())
        return EXIT_INTERNAL_ERROR


def _classify(arguments: argparse.Namespace) -> int:
    try:
        certname = validate_certname(arguments.certname)
        config = load(arguments.config)
    except (InvalidName, ConfigError) as error:
        log.error("%s", error)
        return EXIT_USAGE
    if arguments.explain and config.enc.api_url:
        log.error("--explain reads the directory; it is not available through enc.api_url")
        return EXIT_USAGE
    cache = ClassificationCache(config.cache.dir, config.cache.max_age)

    try:
        if config.enc.api_url:
            from .api_source import fetch

            output = fetch(config.enc, certname)
        else:
            output = _from_directory(config, certname, arguments.explain)
    except UnknownNode as error:
        # The directory said so: a cached answer must never outlive the node.
        cache.forget(certname)
        log.info(f"unknown node {certname}: {error}")
        return EXIT_UNKNOWN_NODE
    except (ClassificationError, DirectoryError) as error:
        log.error(f"cannot classify {certname}: {error}")
        return EXIT_UNCLASSIFIABLE
    except DirectoryUnavailable as error:
        return _serve_cached(cache, certname, str(error), arguments.explain)

    if not arguments.explain:
        try:
            cache.store(certname, output)
        except OSError as error:
            log.warning(f"cannot update the cache in {config.cache.dir}: {error.strerror}")
    sys.stdout.write(output)
    return 0


def _from_directory(config: Config, certname: str, explaining: bool) -> str:
    """The classification read from LDAP: YAML for Puppet, or the explanation for people."""
    with Directory(config.ldap) as directory:
        classification = Classifier(directory, config).classify(certname)
    for warning in classification.warnings:
        log.warning("%s", warning)
    return explain(classification) if explaining else to_yaml(classification)


def _serve_cached(cache: ClassificationCache, certname: str, reason: str, explaining: bool) -> int:
    if explaining:
        log.error(f"directory unavailable: {reason}")
        return EXIT_UNAVAILABLE
    try:
        output, age = cache.load(certname)
    except CacheError as error:
        log.error(f"directory unavailable ({reason}) and {error}")
        return EXIT_UNAVAILABLE
    log.warning(f"directory unavailable ({reason}); "
         f"serving the cached classification confirmed {age:.0f} s ago")
    sys.stdout.write(output)
    return 0

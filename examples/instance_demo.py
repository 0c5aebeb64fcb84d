"""The opslab demo, second part: a member's instance, launched, configured and logged in to.

Run by ``make demo`` after ``examples/demo.py``, as root (local instances are
systemd-nspawn containers). It builds the base image of local instances if
it is not there (Debian 12, about two minutes), then brings up the site of
``tests/site.py`` on an address of this machine (nginx with TLS in front of the
API, slapd with StartTLS, apt-cacher-ng, the wheelhouse and the example
control repository), and, as people would:

1. olga (operations) creates the person vera with her SSH key; vera joins
   the project ``web``;
2. vera asks the API for ``app1`` with the ``greeter`` class and an instance:
   a container boots, the real cloud-init runs its user-data, bootstrap
   installs opslab, the agent applies the project's branch and reports;
3. the greeter answers on the instance's own address;
4. vera logs in over SSH with her key, as herself, and has root;
5. deleting the host removes the container, its entries and its names.

Everything it started is stopped and everything it made is removed at the end.
"""

import os
import secrets
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.append(str(REPO))  # tests.site; opslab itself from the install
from opslab.config import InstanceSettings  # noqa: E402
from opslab.instances import image  # noqa: E402
from opslab.instances.local import LocalProvider  # noqa: E402
from tests.local_instances import IMAGE_CACHE, TEST_ROOTS  # noqa: E402
from tests.site import running_site, ssh  # noqa: E402

FIRST_REPORT_DEADLINE = 600.0


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def demo(work: Path, root: Path) -> int:
    step(f"the base image of local instances: {IMAGE_CACHE}")
    seconds = image.build(IMAGE_CACHE)
    print(f"built in {seconds:.0f} s" if seconds else "complete already")
    step("the site: nginx (TLS) in front of the API, slapd, apt-cacher-ng, wheels, the repository")
    with running_site(work / "site", Path(IMAGE_CACHE), root) as site:
        print(f"API {site.api_url}, files {site.files_url}, directory {site.ldap_uri}")
        step("olga (operations) creates vera with her SSH key; carol adds her to web")
        vera = site.new_person("vera", work)
        print(f"vera's key: {vera.key.with_suffix('.pub').read_text().strip()}")
        status, _ = site.request("POST", "/v1/projects/web/members", {"uid": "vera"},
                                 as_="carol")
        print(f"POST /v1/projects/web/members -> {status}")
        step("vera creates app1 with the greeter class and an instance")
        started = time.monotonic()
        status, answer = site.request("POST", "/v1/projects/web/hosts", {
            "name": "app1", "classes": ["greeter"],
            "class_parameters": {"greeter": {"bind": "0.0.0.0",  # noqa: S104 (its own)
                                             "greeting": "Hello from vera's instance"}},
            "instance": {}}, as_="vera", password=vera.password)
        if status != 201:
            print(f"refused: {status} {answer}")
            return 1
        host = answer["host"]
        certname, address = host["name"], host["instance"]["addresses"][0]
        print(f"{certname}: {host['instance']['state']} at {address} "
              f"({host['instance']['server_id']}) after {time.monotonic() - started:.1f} s")
        step("waiting for its agent's first report (cloud-init, bootstrap, puppet apply)")
        while True:
            _, reports = site.request("GET", f"/v1/hosts/{certname}/reports", as_="carol")
            if reports:
                break
            if time.monotonic() - started > FIRST_REPORT_DEADLINE:
                print("no report in time")
                return 1
            time.sleep(2)
        report = reports[0]
        print(f"report after {time.monotonic() - started:.1f} s: {report['status']}, commit "
              f"{report['commit'][:12]}, puppet {report['duration']:.1f} s")
        step(f"the greeter, from the instance's own address: http://{address}:8181/")
        with urllib.request.urlopen(f"http://{address}:8181/", timeout=10) as response:
            print(response.read().decode().strip())
        step(f"vera logs in: ssh vera@{address} 'id; sudo -n id -un'")
        login = ssh(address, vera, "id; sudo -n id -un")
        print(login.stdout.strip() or login.stderr.strip())
        step(f"deleting {certname}")
        status, _ = site.request("DELETE", f"/v1/hosts/{certname}", as_="vera",
                                 password=vera.password)
        left = LocalProvider(InstanceSettings(), root=root, image=IMAGE_CACHE).records()
        print(f"DELETE /v1/hosts/{certname} -> {status}; local instances left: {len(left)}")
        return 0 if login.returncode == 0 and not left else 1


def main() -> int:
    if os.geteuid() != 0:
        print("the instance demo needs root (systemd-nspawn, ip netns): skipped")
        return 0
    work = Path(tempfile.mkdtemp(prefix="opslab-instance-demo-"))
    root = TEST_ROOTS / f"{os.getpid()}-{secrets.token_hex(4)}"
    root.mkdir(parents=True)
    started = time.monotonic()
    status = 1
    try:
        status = demo(work, root)
    finally:
        provider = LocalProvider(InstanceSettings(), root=root, image=IMAGE_CACHE)
        for record in provider.records():
            provider.delete(record.id, 60)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ninstance demo {'finished' if status == 0 else 'FAILED'} "
          f"in {time.monotonic() - started:.0f} s")
    return status


if __name__ == "__main__":
    raise SystemExit(main())

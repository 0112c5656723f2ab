"""Fixtures for the real-component cluster lab (tests/lab/labctl).

The lab needs root, network namespaces and the binaries built by tests/lab/build.sh
(labctl up builds them on first use).  Tests are marked ``lab``; run them with
``pytest -m lab tests/lab`` as root.
"""

import importlib.machinery
import importlib.util
import os
import subprocess
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
LABCTL = os.path.join(HERE, "labctl")
LABCTL_PY = os.path.join(HERE, "labctl.py")


def _load_labctl():
    loader = importlib.machinery.SourceFileLoader("labctl", LABCTL_PY)
    spec = importlib.util.spec_from_loader("labctl", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


lab = _load_labctl()


def labctl(*args, timeout=900, check=True):
    r = subprocess.run([LABCTL, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and r.returncode != 0:
        raise AssertionError("labctl %s failed (%d):\n%s\n%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
    return r


def nsexec(ns, *cmd, timeout=30):
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=timeout, check=False)


def dig(ns, name, *opts, server=None, timeout=30):
    """dig inside a netns: returns (rc, full output). rc 9 = no reply (timeout)."""
    cmd = ["dig", "+time=2", "+tries=1", *opts]
    if server:
        cmd.append("@" + server)
    r = nsexec(ns, *cmd, name, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def short(ns, name, *opts, server=None):
    rc, out = dig(ns, name, "+short", *opts, server=server)
    return out.strip() if rc == 0 else None


def icmp_echo(ns, addr, timeout=2.0):
    """One ICMP echo from inside ns (no ping binary on the build machines); True on a reply."""
    code = (
        "import socket,struct,sys,time\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP); s.settimeout(%r)\n"
        "h=struct.pack('!BBHHH',8,0,0,0x4c42,1)+b'clusterdns'\n"
        "c=sum(struct.unpack('!%%dH' %% (len(h)//2),h)); c=(c>>16)+(c&0xffff); c=~(c+(c>>16))&0xffff\n"
        "p=h[:2]+struct.pack('!H',c)+h[4:]; s.sendto(p,(%r,0)); end=time.time()+%r\n"
        "while time.time()<end:\n"
        "    d,a=s.recvfrom(2048)\n"
        "    if a[0]==%r and d[20]==0: sys.exit(0)\n"
        "sys.exit(1)\n") % (timeout, addr, timeout, addr)
    import sys as _sys
    try:
        return nsexec(ns, _sys.executable, "-c", code, timeout=timeout + 5).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def lab_is_up():
    return os.path.exists(os.path.join(lab.STATE, "state.json"))


def skip_unless_root():
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")


def wait_until(fn, timeout=30, interval=0.5):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(interval)
    return fn()


@pytest.fixture(scope="module")
def api():
    """The lab for one test module: started when it is down (and taken down after the module),
    every fault healed after the module. Yields the lab's API client."""
    skip_unless_root()
    started = False
    if not lab_is_up():
        labctl("up")
        started = True
    yield lab.Api()
    for name in list(lab.load_state().get("faults", {})):
        labctl("heal", name, check=False)
    if started:
        labctl("down")


@pytest.fixture
def healed(api):
    """A failed test must not break the next one: heal what it left, NodeLocal DNSCache off."""
    yield
    for name in list(lab.load_state().get("faults", {})):
        labctl("heal", name, check=False)
    if api.get("/apis/apps/v1/namespaces/kube-system/daemonsets/node-local-dns"):
        labctl("nodelocal", "off", check=False)

# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Command line for the node test bed, for Molecule (create and destroy run in separate processes).

    PYTHONPATH=tests python -m testbed up STATE_DIR [--pod-if cilium_host] [--except-interface 'cilium_*'] [--owner-pid PID]
    PYTHONPATH=tests python -m testbed down STATE_DIR
    PYTHONPATH=tests python -m testbed restart-dnsmasq STATE_DIR
    PYTHONPATH=tests python -m testbed sweep [--all]

``up --drop-udp53`` adds a DROP of UDP port 53 arriving on the pod interface (the firewall fault,
``Bed.add_drop``). ``restart-dnsmasq`` stops the dnsmasq of the state (its pid file) and starts it
again with the same command line, so that it reads its configuration again (what
``systemctl restart dnsmasq`` is on a real node).

``up`` builds the bed, starts dnsmasq as a daemon in the node namespace serving the VIP, writes
``STATE_DIR/state.json`` and ``STATE_DIR/python3`` (an interpreter wrapper that runs inside the
node namespace, for ``ansible_python_interpreter``). The state is written as soon as the
namespaces exist, and the bed is registered (bed.py) before that, so ``down`` also removes a bed
whose ``up`` was killed half-way. ``down`` kills dnsmasq and every other process in the bed's
namespaces, deletes the namespaces and exits non-zero, naming them, if one is still there; it is
safe to run twice. ``--owner-pid`` names the process whose end makes the bed a leftover (a test
passes its own pid); ``sweep`` removes such leftovers, ``sweep --all`` every registered bed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from testbed.bed import DNSMASQ, REGISTRY, VIP, ZONE, ZONE_ANSWER, Bed, BedError, entry_names, registered, remove, run, sweep


def _write_state(directory, state):
    path = os.path.join(directory, "state.json")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(state, handle)
    os.replace(path + ".tmp", path)


def up(args):
    os.makedirs(args.state, exist_ok=True)
    bed = Bed(args.pod_if, workdir=args.state, owner_pid=args.owner_pid)
    state = {"node": bed.node, "pod": bed.pod, "pod_if": bed.pod_if, "vip": VIP, "pidfile": os.path.join(args.state, "dnsmasq.pid")}
    try:
        _write_state(args.state, state)  # partial: down works from here on
        lines = ["listen-address=%s" % VIP, "bind-dynamic"] if not args.except_interface else ["except-interface=%s" % args.except_interface]
        conf = bed.write_conf("# node test bed (tests/testbed)\n" + "\n".join(lines) + "\n")
        state["dnsmasq_argv"] = [DNSMASQ, "--conf-file=" + conf, "--pid-file=" + state["pidfile"], "--user=root", "--no-resolv", "--no-hosts",
                                 "--address=/%s/%s" % (ZONE, ZONE_ANSWER)]
        run(state["dnsmasq_argv"], netns=bed.node)
        for _attempt in range(50):  # at most 5 s
            if ":53 " in run(["ss", "-lnu"], netns=bed.node).stdout:
                break
            time.sleep(0.1)
        else:
            raise BedError("dnsmasq did not listen on port 53 within 5 s")
        wrapper = os.path.join(args.state, "python3")
        with open(wrapper, "w", encoding="utf-8") as handle:
            handle.write('#!/bin/sh\nexec ip netns exec %s %s "$@"\n' % (bed.node, args.python or sys.executable))
        os.chmod(wrapper, 0o755)
        state["python"] = wrapper
        state["conf"] = conf
        if args.drop_udp53:
            bed.add_drop("udp")
    except BaseException:
        try:
            down_state(state)
        except BedError as exc:
            print("testbed up: clean-up after the failure: %s" % exc, file=sys.stderr)
        raise
    _write_state(args.state, state)
    print(json.dumps(state))


def down_state(state):
    """Stop the state's dnsmasq (it may have gone already) and remove the namespaces with
    everything still in them; BedError when one is left."""
    pidfile = state.get("pidfile")
    try:
        with open(pidfile, encoding="utf-8") as handle:
            pid = int(handle.read().strip())
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    except (OSError, TypeError, ValueError):
        pass
    registry = os.path.join(REGISTRY, "%s.json" % state.get("node")) if state.get("node") else None
    names = entry_names(state)
    for entry in registered():
        if entry["path"] == registry:
            names = entry_names(entry)  # with the namespaces added after up
    remove(names, registry)


def _read_state(directory):
    with open(os.path.join(directory, "state.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as handle:
            return handle.read().split(") ", 1)[-1][:1] != "Z"
    except OSError:
        return False


def restart_dnsmasq(args):
    state = _read_state(args.state)
    try:
        with open(state["pidfile"], encoding="utf-8") as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        for _attempt in range(50):  # at most 5 s
            if not _alive(pid):
                break
            time.sleep(0.1)
        else:
            raise BedError("dnsmasq (pid %d) did not stop within 5 s" % pid)
    proc = run(state["dnsmasq_argv"], netns=state["node"], check=False)
    if proc.returncode != 0:
        raise BedError("dnsmasq did not start again: %s" % (proc.stderr or proc.stdout).strip())
    for _attempt in range(50):  # at most 5 s
        if ":53 " in run(["ss", "-lnu"], netns=state["node"]).stdout:
            break
        time.sleep(0.1)
    else:
        raise BedError("dnsmasq did not listen on port 53 within 5 s after the restart")
    print("dnsmasq restarted")


def down(args):
    path = os.path.join(args.state, "state.json")
    states = []
    try:
        with open(path, encoding="utf-8") as handle:
            states.append(json.load(handle))
    except FileNotFoundError:
        pass
    except ValueError as exc:
        print("%s is not JSON (%s): removing the beds registered for %s" % (path, exc, args.state), file=sys.stderr)
    # A bed whose up was killed before it wrote the state, or a state that names another bed.
    directory = os.path.abspath(args.state)
    known = {s.get("node") for s in states}
    states.extend(e for e in registered() if e.get("workdir") == directory and e.get("node") not in known)
    for state in states:
        down_state(state)
    if os.path.exists(path):
        os.unlink(path)


def sweep_cmd(args):
    for node, pod, reason in sweep(everything=args.all):
        print("removed %s %s: %s" % (node, pod, reason))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m testbed")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up")
    p_up.add_argument("state")
    p_up.add_argument("--pod-if", default="cilium_host")
    p_up.add_argument("--except-interface", default=None, help="dnsmasq except-interface pattern (the seed-003 fault)")
    p_up.add_argument("--python", default=None, help="interpreter the wrapper runs in the node namespace")
    p_up.add_argument("--drop-udp53", action="store_true", help="DROP UDP port 53 arriving on the pod interface (firewall fault)")
    p_up.add_argument("--owner-pid", type=int, default=0, help="process whose end makes the bed a leftover for sweep (default: none)")
    p_down = sub.add_parser("down")
    p_down.add_argument("state")
    p_restart = sub.add_parser("restart-dnsmasq")
    p_restart.add_argument("state")
    p_sweep = sub.add_parser("sweep")
    p_sweep.add_argument("--all", action="store_true", help="every registered bed, not only those whose owner has ended")
    args = parser.parse_args(argv)
    try:
        {"up": up, "down": down, "restart-dnsmasq": restart_dnsmasq, "sweep": sweep_cmd}[args.command](args)
    except BedError as exc:
        print("testbed %s: %s" % (args.command, exc), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

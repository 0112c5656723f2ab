# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CT001 made real on the node test bed, and undone (Molecule create / destroy of node_conntrack).

    python3 ct_fault.py fill STATE_DIR NODE_NETNS     # lower the global limit, fill the node's table
    python3 ct_fault.py restore STATE_DIR NODE_NETNS  # put the limit back, delete the entries

nf_conntrack_max is global to the kernel (every network namespace counts its own entries against
it), and writable only from the root namespace. ``fill`` saves the live value to STATE_DIR once,
starts a guard process that puts it back after GUARD_SECONDS whatever happens, lowers the limit to
(the largest count of any namespace on the machine + HEADROOM), so no other namespace comes near it,
and inserts ASSURED entries (documentation addresses, no packet sent) into the node namespace until
its count equals the limit: the kernel can neither early-drop nor evict assured entries, so a new
flow tracked in the node namespace (the pod's DNS query) is dropped, as on a node whose table is full.
``restore`` writes the saved value back, stops the guard and deletes the entries. Stdlib only.
"""

import contextlib
import os
import signal
import subprocess
import sys

MAX = "/proc/sys/net/netfilter/nf_conntrack_max"
COUNT = "/proc/sys/net/netfilter/nf_conntrack_count"
GUARD_SECONDS = 300
HEADROOM = 2048
SRC, DST = "198.51.100.7", "198.51.100.8"
FILL_SECONDS = 60


def read(path):
    with open(path, encoding="ascii") as handle:
        return handle.read().strip()


def write(path, value):
    with open(path, "w", encoding="ascii") as handle:
        handle.write("%s\n" % value)


def counts():
    found = {"(root)": int(read(COUNT))}
    for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=30).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name:
            proc = subprocess.run(["ip", "netns", "exec", name, "cat", COUNT], capture_output=True, text=True, check=False, timeout=30)
            if proc.returncode == 0 and proc.stdout.strip().isdigit():
                found[name] = int(proc.stdout.strip())
    return found


def fill(state, node):
    saved = os.path.join(state, "nf_conntrack_max.orig")
    if not os.path.exists(saved):
        write(saved, read(MAX))
    original = int(read(saved))
    guard = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(%d); open(%r, 'w').write('%d\\n')" % (GUARD_SECONDS, MAX, original)],
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    write(os.path.join(state, "guard.pid"), guard.pid)
    found = counts()
    limit = max(found.values()) + HEADROOM
    if limit >= original:
        sys.exit("refusing: the largest conntrack count %s leaves no room below nf_conntrack_max %d" % (found, original))
    write(MAX, limit)
    need = limit - found.get(node, 0)
    # One shell inside the node namespace inserts the entries (bounded in count and time).
    script = ("i=0; end=$(( $(date +%%s) + %d )); while [ $i -lt %d ] && [ $(date +%%s) -lt $end ]; do "
              "conntrack -I -p udp -s %s -d %s --sport $((10000 + i)) --dport 53 -t 900 -u ASSURED >/dev/null 2>&1; i=$((i + 1)); done"
              % (FILL_SECONDS, need, SRC, DST))
    subprocess.run(["ip", "netns", "exec", node, "sh", "-c", script], check=True, timeout=FILL_SECONDS + 30)
    now = int(subprocess.run(["ip", "netns", "exec", node, "cat", COUNT], capture_output=True, text=True, check=True, timeout=30).stdout)
    print("nf_conntrack_max %d -> %d (largest count elsewhere %d); node %s holds %d entries" % (original, limit, max(found.values()), node, now))
    if now < limit:
        sys.exit("the fill reached %d of %d entries" % (now, limit))


def restore(state, node):
    saved = os.path.join(state, "nf_conntrack_max.orig")
    if os.path.exists(saved):
        write(MAX, read(saved))
        print("nf_conntrack_max restored to %s" % read(saved))
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(read(os.path.join(state, "guard.pid"))), signal.SIGTERM)
    subprocess.run(["ip", "netns", "exec", node, "conntrack", "-D", "-s", SRC], capture_output=True, check=False, timeout=60)


def main(argv):
    if len(argv) != 3 or argv[0] not in ("fill", "restore"):
        sys.exit(__doc__)
    {"fill": fill, "restore": restore}[argv[0]](argv[1], argv[2])


if __name__ == "__main__":
    main(sys.argv[1:])

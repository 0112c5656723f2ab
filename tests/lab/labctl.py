"""clusterdns lab: real etcd, kube-apiserver, kube-proxy, CoreDNS and node-cache in network namespaces.

Usage: labctl up|down|status|kubeconfig|fault NAME|heal NAME|faults|nodelocal on|off|inventory [--python PATH]|logs NAME

Every lab address lives inside a network namespace this tool creates (prefix ``cdl-``); the root
namespace only gets a TCP forwarder listening on 127.0.0.1 that opens its upstream sockets inside
the ``cdl-cp`` namespace (no address is added to any root interface).  Python 3 stdlib only.
See docs/lab.md.
"""

import base64
import calendar
import ctypes
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
STATE = os.environ.get("CLUSTERDNS_LAB_STATE", "/run/clusterdns-lab")
CACHE = os.environ.get("CLUSTERDNS_LAB_CACHE", "/var/cache/clusterdns-doctor/lab")
BIN = os.path.join(CACHE, "bin")

ETCD_VERSION = "v3.6.16"
K8S_VERSION = "v1.34.4"
COREDNS_VERSION = os.environ.get("CLUSTERDNS_LAB_COREDNS_VERSION", "v1.12.4")
NODECACHE_VERSION = "v0.0.0-20230331134350-76795c66ba55"

PREFIX = "cdl-"
CP = PREFIX + "cp"
UPSTREAM = PREFIX + "upstream"
CP_IP = "10.201.0.1"
UPSTREAM_IP = "10.201.0.53"
DNS_SLOTS = {"a": "10.201.0.21", "b": "10.201.0.22"}
SERVICE_CIDR = "10.96.0.0/16"
KUBE_DNS_IP = "10.96.0.10"
KUBE_DNS_UPSTREAM_IP = "10.96.0.11"
CLUSTER_CIDR = "10.244.0.0/16"
NODELOCAL_IP = "169.254.20.10"
LAB_ZONE = "lab.example"
NODES = int(os.environ.get("CLUSTERDNS_LAB_NODES", "2"))
KUBELET_PORT = 10250
COREDNS_IMAGE = "registry.k8s.io/coredns/coredns:" + COREDNS_VERSION
NODECACHE_IMAGE = "registry.k8s.io/dns/k8s-dns-node-cache:lab-" + NODECACHE_VERSION


def node_name(i):
    return "node%d" % i


def node_ns(i):
    return PREFIX + node_name(i)


def pod_ns(i):
    return PREFIX + "pod%d" % i


def node_ip(i):
    return "10.201.0.%d" % (10 + i)


def pod_net(i):
    return "10.244.%d" % i


def dns_ns(slot):
    return PREFIX + "dns-" + slot


def all_netns():
    names = [CP, UPSTREAM] + [dns_ns(s) for s in DNS_SLOTS]
    for i in range(1, NODES + 1):
        names += [node_ns(i), pod_ns(i)]
    return names


def binpath(name):
    versions = {"etcd": ETCD_VERSION, "etcdctl": ETCD_VERSION, "kube-apiserver": K8S_VERSION,
                "kube-proxy": K8S_VERSION, "coredns": COREDNS_VERSION, "node-cache": NODECACHE_VERSION}
    return os.path.join(BIN, "%s-%s" % (name, versions[name]))


def sp(*parts):
    return os.path.join(STATE, *parts)


def log(msg):
    sys.stderr.write("[labctl %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def run(cmd, check=True, capture=False, inp=None, timeout=60):
    res = subprocess.run(cmd, input=inp, capture_output=True, text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), res.returncode, res.stderr.strip()))
    return res.stdout if capture else res


def nsrun(ns, cmd, **kw):
    return run(["ip", "netns", "exec", ns] + cmd, **kw)


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def read(path, default=None):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def load_state():
    return json.loads(read(sp("state.json"), "{}"))


def save_state(st):
    write(sp("state.json"), json.dumps(st, indent=1, sort_keys=True))


# --------------------------------------------------------------------------------------------
# processes


def spawn(name, ns, cmd, env=None, logname=None):
    """Start cmd inside netns ns, detached, logging to logs/<name>.log; pid in pids/<name>.pid."""
    os.makedirs(sp("logs"), exist_ok=True)
    os.makedirs(sp("pids"), exist_ok=True)
    logf = open(sp("logs", (logname or name) + ".log"), "ab")
    full = (["ip", "netns", "exec", ns] if ns else []) + cmd
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen(full, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=e, start_new_session=True, cwd=STATE)
    logf.close()
    write(sp("pids", name + ".pid"), "%d\n" % p.pid)
    return p


def pid_of(name):
    txt = read(sp("pids", name + ".pid"))
    if not txt:
        return None
    pid = int(txt.strip())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    # zombie or reused pid: require our state dir or binary in the command line
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().split(")")[-1].split()[0] == "Z":
                return None
    except OSError:
        return None
    return pid


def stop(name, timeout=10.0):
    pid = pid_of(name)
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        end = time.time() + timeout
        while time.time() < end and pid_of(name):
            time.sleep(0.1)
        if pid_of(name):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            time.sleep(0.2)
    try:
        os.unlink(sp("pids", name + ".pid"))
    except FileNotFoundError:
        pass


def stop_all(names, timeout=10.0):
    pids = {n: pid_of(n) for n in names}
    for pid in pids.values():
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    end = time.time() + timeout
    while time.time() < end and any(pid_of(n) for n in names):
        time.sleep(0.1)
    for n in names:
        stop(n, 0.5)


def wait_for(what, fn, timeout=60.0, interval=0.3):
    end = time.time() + timeout
    last = None
    while time.time() < end:
        try:
            r = fn()
            if r:
                return r
        except Exception as exc:  # noqa: BLE001 - readiness probes fail in many ways
            last = exc
        time.sleep(interval)
    raise RuntimeError("timed out waiting for %s (%s)" % (what, last))


# --------------------------------------------------------------------------------------------
# netns plumbing

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "setns(%s): %s" % (path, os.strerror(err)))
    finally:
        os.close(fd)


def netns_exists(ns):
    return os.path.exists("/run/netns/" + ns)


def make_topology():
    for ns in all_netns():
        if netns_exists(ns):
            raise RuntimeError("netns %s already exists: run labctl down first" % ns)
    for ns in all_netns():
        run(["ip", "netns", "add", ns])
        nsrun(ns, ["ip", "link", "set", "lo", "up"])
    nsrun(CP, ["ip", "link", "add", "br0", "type", "bridge"])
    nsrun(CP, ["ip", "addr", "add", CP_IP + "/24", "dev", "br0"])
    nsrun(CP, ["ip", "link", "set", "br0", "up"])

    def attach(ns, ip, tag):
        peer = "v-" + tag
        run(["ip", "-n", CP, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "-n", CP, "link", "set", peer, "master", "br0", "up"])
        run(["ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])

    attach(UPSTREAM, UPSTREAM_IP, "up")
    for s, ip in DNS_SLOTS.items():
        attach(dns_ns(s), ip, "dns" + s)
    for i in range(1, NODES + 1):
        attach(node_ns(i), node_ip(i), "n%d" % i)
        # pod veth: the node side is called cilium_host (seed 003: Cilium pod traffic enters the
        # host stack there); the pod side is eth0.
        nn, pn, net = node_ns(i), pod_ns(i), pod_net(i)
        run(["ip", "-n", nn, "link", "add", "cilium_host", "type", "veth", "peer", "name", "eth0",
             "netns", pn])
        run(["ip", "-n", nn, "addr", "add", net + ".1/24", "dev", "cilium_host"])
        run(["ip", "-n", nn, "link", "set", "cilium_host", "up"])
        run(["ip", "-n", pn, "addr", "add", net + ".2/24", "dev", "eth0"])
        run(["ip", "-n", pn, "link", "set", "eth0", "up"])
        run(["ip", "-n", pn, "route", "add", "default", "via", net + ".1"])
        nsrun(nn, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    # every lab host on the bridge routes the pod networks to their node, the service range to cp
    for ns in [CP, UPSTREAM] + [dns_ns(s) for s in DNS_SLOTS] + [node_ns(i) for i in range(1, NODES + 1)]:
        for j in range(1, NODES + 1):
            if ns != node_ns(j):
                run(["ip", "-n", ns, "route", "add", pod_net(j) + ".0/24", "via", node_ip(j)])
    for i in range(1, NODES + 1):
        run(["ip", "-n", node_ns(i), "route", "add", "default", "via", CP_IP])
    # resolv.conf per netns (ip netns exec bind-mounts /etc/netns/<ns>/resolv.conf)
    for ns in all_netns():
        os.makedirs("/etc/netns/" + ns, exist_ok=True)
    for ns in [CP, UPSTREAM] + [dns_ns(s) for s in DNS_SLOTS] + [node_ns(i) for i in range(1, NODES + 1)]:
        write("/etc/netns/%s/resolv.conf" % ns, "nameserver %s\n" % UPSTREAM_IP)
    for i in range(1, NODES + 1):
        write("/etc/netns/%s/resolv.conf" % pod_ns(i), kubelet_resolv_conf(KUBE_DNS_IP))


def kubelet_resolv_conf(ns_ip):
    return ("search default.svc.cluster.local svc.cluster.local cluster.local\n"
            "nameserver %s\noptions ndots:5\n" % ns_ip)


# --------------------------------------------------------------------------------------------
# PKI and credentials


def make_pki():
    d = sp("pki")
    os.makedirs(d, exist_ok=True)

    def o(name):
        return os.path.join(d, name)

    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", o("ca.key"),
         "-out", o("ca.crt"), "-days", "7", "-subj", "/CN=clusterdns-lab-ca",
         # Python >= 3.13 verifies strictly (VERIFY_X509_STRICT): the CA needs keyUsage
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"])
    sans = ["IP:%s" % x for x in (CP_IP, "127.0.0.1", "10.96.0.1")]
    sans += ["DNS:%s" % x for x in ("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                    "kubernetes.default.svc.cluster.local", "localhost")]
    write(o("ext.cnf"), "subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
          "keyUsage=critical,digitalSignature,keyEncipherment\n"
          "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
          % ",".join(sans))
    run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", o("apiserver.key"),
         "-out", o("apiserver.csr"), "-subj", "/CN=kube-apiserver"])
    run(["openssl", "x509", "-req", "-in", o("apiserver.csr"), "-CA", o("ca.crt"), "-CAkey", o("ca.key"),
         "-CAcreateserial", "-days", "7", "-extfile", o("ext.cnf"), "-out", o("apiserver.crt")])
    run(["openssl", "genrsa", "-out", o("sa.key"), "2048"])
    run(["openssl", "rsa", "-in", o("sa.key"), "-pubout", "-out", o("sa.pub")])
    tokens = {u: secrets.token_hex(16) for u in ("admin", "kube-proxy", "coredns")}
    lines = [
        '%s,admin,lab-admin,"system:masters"' % tokens["admin"],
        "%s,system:kube-proxy,lab-kube-proxy" % tokens["kube-proxy"],
        '%s,system:serviceaccount:kube-system:coredns,lab-coredns,'
        '"system:serviceaccounts,system:serviceaccounts:kube-system"' % tokens["coredns"],
    ]
    write(o("tokens.csv"), "\n".join(lines) + "\n", 0o600)
    write(sp("admin.token"), tokens["admin"], 0o600)
    for user in ("admin", "kube-proxy", "coredns"):
        write(sp("kubeconfig-%s-inlab" % user),
              kubeconfig_text("https://%s:6443" % CP_IP, tokens[user], user), 0o600)


def kubeconfig_text(server, token, user):
    ca = base64.b64encode(open(sp("pki", "ca.crt"), "rb").read()).decode()
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "clusterdns-lab",
        "clusters": [{"name": "clusterdns-lab",
                      "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "clusterdns-lab",
                      "context": {"cluster": "clusterdns-lab", "user": user, "namespace": "default"}}],
    }, indent=1) + "\n"


# --------------------------------------------------------------------------------------------
# API client (stdlib).  From the root namespace it goes through the loopback forwarder; inside the
# cp namespace (the agent) it talks to the apiserver directly.


class Api:
    def __init__(self, server=None):
        if server is None:
            server = "https://127.0.0.1:%s" % load_state()["port"]
        self.server = server
        self.token = read(sp("admin.token")).strip()
        self.ctx = ssl.create_default_context(cafile=sp("pki", "ca.crt"))

    def req(self, method, path, body=None, ctype="application/json", ok404=False):
        data = json.dumps(body).encode() if body is not None else None
        r = urllib.request.Request(self.server + path, data=data, method=method)
        r.add_header("Authorization", "Bearer " + self.token)
        r.add_header("Accept", "application/json")
        if data is not None:
            r.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(r, context=self.ctx, timeout=15) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and ok404:
                return None
            raise RuntimeError("%s %s: %d %s" % (method, path, exc.code, exc.read()[:400].decode())) from None

    def get(self, path):
        return self.req("GET", path, ok404=True)

    def create(self, path, obj):
        try:
            return self.req("POST", path, obj)
        except RuntimeError as exc:
            if ": 409 " in str(exc):
                return None
            raise

    def patch(self, path, patch):
        return self.req("PATCH", path, patch, "application/merge-patch+json")

    def delete(self, path):
        return self.req("DELETE", path, ok404=True)


# --------------------------------------------------------------------------------------------
# loopback forwarder: listens on 127.0.0.1 in the root netns, connects from inside cdl-cp


def forwarder_main(port_file, target):
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    # the listening socket stays in the root netns; every socket created from now on is in cp
    setns("/run/netns/" + CP)
    write(port_file, "%d\n" % lsock.getsockname()[1])
    host, port = target.rsplit(":", 1)

    def pipe(a, b):
        try:
            while True:
                buf = a.recv(65536)
                if not buf:
                    break
                b.sendall(buf)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle(c):
        try:
            u = socket.create_connection((host, int(port)), timeout=10)
            u.settimeout(None)
        except OSError:
            c.close()
            return
        t = threading.Thread(target=pipe, args=(u, c), daemon=True)
        t.start()
        pipe(c, u)
        t.join()
        c.close()
        u.close()

    while True:
        c, _addr = lsock.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


# --------------------------------------------------------------------------------------------
# Corefiles and manifests


def default_corefile():
    return """.:53 {
    errors
    log
    health {
        lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
        max_concurrent 1000
    }
    cache 30
    loop
    reload 2s
    loadbalance
}
""" % sp("kubeconfig-coredns-inlab")


NODELOCAL_COREFILE = """cluster.local:53 {
    errors
    log
    cache {
        success 9984 30
        denial 9984 5
    }
    reload 2s
    loop
    bind %(nl)s %(dns)s
    forward . __PILLAR__CLUSTER__DNS__ {
        force_tcp
    }
    prometheus :9253
    health %(nl)s:8080
}
in-addr.arpa:53 {
    errors
    cache 30
    reload 2s
    loop
    bind %(nl)s %(dns)s
    forward . __PILLAR__CLUSTER__DNS__ {
        force_tcp
    }
    prometheus :9253
}
.:53 {
    errors
    cache 30
    reload 2s
    loop
    bind %(nl)s %(dns)s
    forward . __PILLAR__UPSTREAM__SERVERS__
    prometheus :9253
}
""" % {"nl": NODELOCAL_IP, "dns": KUBE_DNS_IP}


def meta(name, ns=None, labels=None, annotations=None):
    m = {"name": name}
    if ns:
        m["namespace"] = ns
    if labels:
        m["labels"] = labels
    if annotations:
        m["annotations"] = annotations
    return m


COREDNS_RULES = [
    {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
     "verbs": ["list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
]


def dns_service(name, ip):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": meta(name, "kube-system", {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
                             {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}),
            "spec": {"clusterIP": ip, "selector": {"k8s-app": "kube-dns"},
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                               {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                               {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]}}


def pod_template(labels, name, image, args, ports=None):
    c = {"name": name, "image": image, "args": args}
    if ports:
        c["ports"] = ports
    return {"metadata": {"labels": labels}, "spec": {"containers": [c]}}


def kube_proxy_config():
    """kube-proxy's configuration as kubeadm writes it into ConfigMap kube-system/kube-proxy
    (``config.conf``, KubeProxyConfiguration v1alpha1), with the settings the lab's kube-proxy runs
    with (``--proxy-mode=iptables``, ``--cluster-cidr``, ``--conntrack-max-per-core=0``)."""
    return "\n".join([
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1",
        "bindAddress: 0.0.0.0",
        "bindAddressHardFail: false",
        "clientConnection:",
        "  acceptContentTypes: \"\"",
        "  burst: 0",
        "  contentType: \"\"",
        "  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf",
        "  qps: 0",
        "clusterCIDR: " + CLUSTER_CIDR,
        "configSyncPeriod: 0s",
        "conntrack:",
        "  maxPerCore: 0",
        "  min: null",
        "  tcpCloseWaitTimeout: null",
        "  tcpEstablishedTimeout: null",
        "enableProfiling: false",
        "healthzBindAddress: \"\"",
        "hostnameOverride: \"\"",
        "iptables:",
        "  localhostNodePorts: null",
        "  masqueradeAll: false",
        "  masqueradeBit: null",
        "  minSyncPeriod: 0s",
        "  syncPeriod: 0s",
        "ipvs:",
        "  excludeCIDRs: null",
        "  minSyncPeriod: 0s",
        "  scheduler: \"\"",
        "  strictARP: false",
        "  syncPeriod: 0s",
        "  tcpFinTimeout: 0s",
        "  tcpTimeout: 0s",
        "  udpTimeout: 0s",
        "kind: KubeProxyConfiguration",
        "metricsBindAddress: \"\"",
        "mode: iptables",
        "nodePortAddresses: null",
        "oomScoreAdj: null",
        "portRange: \"\"",
        "showHiddenMetricsForAlphaFeatures: \"\"",
        "winkernel:",
        "  enableDSR: false",
        "  forwardHealthCheckVip: false",
        "  networkName: \"\"",
        "  rootHnsEndpointName: \"\"",
        "  sourceVip: \"\"",
        ""])


def kube_proxy_configmap():
    """ConfigMap kube-system/kube-proxy as kubeadm creates it, so that kube-proxy's mode is known
    to diagnose (NLD003)."""
    kubeconfig = "\n".join([
        "apiVersion: v1", "kind: Config", "clusters:", "- cluster:",
        "    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        "    server: https://%s:6443" % CP_IP, "  name: default", "contexts:", "- context:",
        "    cluster: default", "    namespace: default", "    user: default", "  name: default",
        "current-context: default", "users:", "- name: default", "  user:",
        "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token", ""])
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta("kube-proxy", "kube-system", {"app": "kube-proxy"}),
            "data": {"config.conf": kube_proxy_config(), "kubeconfig.conf": kubeconfig}}


def bootstrap_objects(api):
    for ns in ("kube-system", "default"):
        api.create("/api/v1/namespaces/%s/serviceaccounts" % ns,
                   {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("default", ns)})
    api.create("/api/v1/namespaces/kube-system/serviceaccounts",
               {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta("coredns", "kube-system")})
    api.create("/apis/rbac.authorization.k8s.io/v1/clusterroles",
               {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": meta("system:coredns", labels={"kubernetes.io/bootstrapping": "rbac-defaults"}),
                "rules": COREDNS_RULES})
    api.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
               {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": meta("system:coredns", labels={"kubernetes.io/bootstrapping": "rbac-defaults"}),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "system:coredns"},
                "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]})
    for i in range(1, NODES + 1):
        api.create("/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node",
            "metadata": meta(node_name(i), labels={"kubernetes.io/hostname": node_name(i),
                                                   "kubernetes.io/os": "linux"}),
            "spec": {"podCIDR": pod_net(i) + ".0/24", "podCIDRs": [pod_net(i) + ".0/24"]}})
        # status on create is dropped; without InternalIP kube-proxy 1.34 waits 30 s for node IPs
        api.patch("/api/v1/nodes/%s/status" % node_name(i), {"status": {
            "addresses": [{"type": "InternalIP", "address": node_ip(i)},
                          {"type": "Hostname", "address": node_name(i)}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "clusterdns lab: agent stands in for the kubelet",
                            "lastHeartbeatTime": now_rfc3339(), "lastTransitionTime": now_rfc3339()}],
            "nodeInfo": {"kubeletVersion": K8S_VERSION, "kubeProxyVersion": K8S_VERSION,
                         "operatingSystem": "linux", "architecture": "amd64",
                         "containerRuntimeVersion": "lab://netns", "osImage": "clusterdns lab",
                         "kernelVersion": os.uname().release, "machineID": "", "systemUUID": "",
                         "bootID": ""}}})
    api.create("/api/v1/namespaces/kube-system/configmaps",
               {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("coredns", "kube-system"),
                "data": {"Corefile": default_corefile()}})
    api.create("/api/v1/namespaces/kube-system/configmaps", kube_proxy_configmap())
    api.create("/api/v1/namespaces/kube-system/services", dns_service("kube-dns", KUBE_DNS_IP))
    api.create("/api/v1/namespaces/kube-system/services", dns_service("kube-dns-upstream", KUBE_DNS_UPSTREAM_IP))
    labels = {"k8s-app": "kube-dns"}
    tmpl = pod_template(labels, "coredns", COREDNS_IMAGE, ["-conf", "/etc/coredns/Corefile"],
                        [{"containerPort": 53, "name": "dns", "protocol": "UDP"},
                         {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
                         {"containerPort": 9153, "name": "metrics", "protocol": "TCP"}])
    tmpl["spec"]["serviceAccountName"] = "coredns"
    tmpl["spec"]["dnsPolicy"] = "Default"
    api.create("/apis/apps/v1/namespaces/kube-system/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta("coredns", "kube-system", labels),
        "spec": {"replicas": 2, "selector": {"matchLabels": labels}, "template": tmpl}})


def nodelocal_objects():
    labels = {"k8s-app": "node-local-dns"}
    tmpl = pod_template(labels, "node-cache", NODECACHE_IMAGE,
                        ["-localip", "%s,%s" % (NODELOCAL_IP, KUBE_DNS_IP), "-conf", "/etc/Corefile",
                         "-upstreamsvc", "kube-dns-upstream"])
    tmpl["spec"]["hostNetwork"] = True
    tmpl["spec"]["dnsPolicy"] = "Default"
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("node-local-dns", "kube-system"),
          "data": {"Corefile": NODELOCAL_COREFILE}}
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet",
          "metadata": meta("node-local-dns", "kube-system", labels),
          "spec": {"selector": {"matchLabels": labels}, "template": tmpl}}
    return cm, ds


# --------------------------------------------------------------------------------------------
# the agent: the lab's stand-in for the kubelet (and for the Deployment/EndpointSlice
# controllers).  It runs inside the cp namespace and, once a second:
#   * mirrors ConfigMap kube-system/coredns into each CoreDNS replica's Corefile (what a kubelet
#     does for a ConfigMap volume; CoreDNS's reload plugin then picks it up);
#   * runs Deployment kube-system/coredns' replicas as CoreDNS processes in cdl-dns-a/-b,
#     restarting them with back-off when they exit, and writes their Pod status;
#   * writes the EndpointSlices of kube-dns and kube-dns-upstream from the Services' selectors and
#     the CoreDNS /ready probes;
#   * runs node-cache in every node namespace while DaemonSet + ConfigMap node-local-dns exist.


def now_rfc3339():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Agent:
    def __init__(self):
        self.api = Api("https://%s:6443" % CP_IP)
        self.procs = {}        # name -> dict(popen, restarts, not_before, started, last)
        self.written = {}      # cache of last-written objects, to avoid useless writes
        self.nodecache = {}    # node index -> args signature
        self.pod_created = set()
        self.log_marks = {}    # log path -> [(time, size)], for the kubelet stand-in's sinceSeconds

    # ---- process supervision (kubelet-like restart with back-off)
    def ensure_proc(self, name, ns, cmd, env=None):
        p = self.procs.setdefault(name, {"popen": None, "restarts": 0, "not_before": 0.0,
                                         "started": None, "last": None, "backoff": 1.0})
        po = p["popen"]
        if po is not None and po.poll() is None:
            if p["started"] and time.time() - p["started"] > 30:
                p["backoff"] = 1.0
            return "running"
        if po is not None:  # exited
            p["last"] = {"exitCode": po.returncode, "finishedAt": now_rfc3339(),
                         "reason": "Completed" if po.returncode == 0 else "Error"}
            p["popen"] = None
            p["restarts"] += 1
            p["not_before"] = time.time() + p["backoff"]
            p["backoff"] = min(p["backoff"] * 2, 10.0)
            log("%s exited with %s; restart in %.0fs" % (name, po.returncode, p["not_before"] - time.time()))
        if time.time() < p["not_before"]:
            return "backoff"
        p["popen"] = spawn(name, ns, cmd, env)
        p["started"] = time.time()
        return "running"

    def kill_proc(self, name):
        p = self.procs.get(name)
        stop(name)
        if p and p["popen"] is not None:
            try:
                p["popen"].wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            p["popen"] = None
            p["last"] = {"exitCode": 0, "finishedAt": now_rfc3339(), "reason": "Completed"}

    def proc_status(self, name):
        p = self.procs.get(name)
        if not p:
            return "absent", None
        po = p["popen"]
        if po is not None and po.poll() is None:
            return "running", p
        return ("backoff" if p.get("restarts") else "stopped"), p

    def write_once(self, key, value, fn):
        if self.written.get(key) != value:
            fn()
            self.written[key] = value

    # ---- pods
    def pod_status(self, name, ns, node_idx, ip, labels, image, container, ready, phase="Running"):
        path = "/api/v1/namespaces/%s/pods" % ns
        if (ns, name) not in self.pod_created:
            obj = {"apiVersion": "v1", "kind": "Pod", "metadata": meta(name, ns, labels),
                   "spec": {"nodeName": node_name(node_idx),
                            "containers": [{"name": container, "image": image}]}}
            if ns == "kube-system" and container == "coredns":
                obj["spec"]["serviceAccountName"] = "coredns"
                obj["spec"]["dnsPolicy"] = "Default"
            if container == "node-cache":
                obj["spec"]["hostNetwork"] = True
                obj["spec"]["dnsPolicy"] = "Default"
            self.api.create(path, obj)
            self.pod_created.add((ns, name))
        pstate, p = self.proc_status(name) if container != "dnsutils" else ("running", None)
        cs = {"name": container, "image": image, "imageID": "", "ready": bool(ready),
              "restartCount": (p or {}).get("restarts", 0), "started": pstate == "running"}
        if pstate == "running":
            cs["state"] = {"running": {"startedAt": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime((p or {}).get("started") or time.time()))}}
        elif pstate == "backoff":
            cs["state"] = {"waiting": {"reason": "CrashLoopBackOff",
                                       "message": "back-off restarting failed container"}}
        else:
            last = (p or {}).get("last") or {"exitCode": 0, "reason": "Completed"}
            cs["state"] = {"terminated": {"exitCode": last["exitCode"], "reason": last["reason"],
                                          "finishedAt": last.get("finishedAt") or now_rfc3339()}}
        if p and p.get("last"):
            cs["lastState"] = {"terminated": dict(p["last"])}
        rstr = "True" if ready else "False"
        status = {"phase": phase, "hostIP": node_ip(node_idx), "hostIPs": [{"ip": node_ip(node_idx)}],
                  "podIP": ip, "podIPs": [{"ip": ip}],
                  "conditions": [{"type": "PodScheduled", "status": "True"},
                                 {"type": "Initialized", "status": "True"},
                                 {"type": "ContainersReady", "status": rstr},
                                 {"type": "Ready", "status": rstr}],
                  "containerStatuses": [cs]}
        key = json.dumps(status, sort_keys=True)
        self.write_once(("pod", ns, name), key,
                        lambda: self.api.patch("%s/%s/status" % (path, name), {"status": status}))

    def delete_pod(self, ns, name):
        if (ns, name) in self.pod_created or self.written.get(("pod", ns, name)):
            self.api.delete("/api/v1/namespaces/%s/pods/%s?gracePeriodSeconds=0" % (ns, name))
            self.pod_created.discard((ns, name))
            self.written.pop(("pod", ns, name), None)

    # ---- CoreDNS
    def sync_coredns(self):
        cm = self.api.get("/api/v1/namespaces/kube-system/configmaps/coredns")
        corefile = ((cm or {}).get("data") or {}).get("Corefile")
        dep = self.api.get("/apis/apps/v1/namespaces/kube-system/deployments/coredns")
        replicas = 0 if dep is None else (dep["spec"].get("replicas") or 0)
        slots = list(DNS_SLOTS)[:max(0, min(replicas, len(DNS_SLOTS)))]
        ready_count = 0
        pods = []
        for idx, slot in enumerate(DNS_SLOTS):
            name = "coredns-" + slot
            conf = sp("coredns", slot, "Corefile")
            if corefile is not None and read(conf) != corefile:
                write(conf, corefile)
            held = os.path.exists(sp("hold", name))
            if slot in slots and not held and corefile is not None:
                self.ensure_proc(name, dns_ns(slot), [binpath("coredns"), "-conf", conf])
            elif self.proc_status(name)[0] == "running":
                self.kill_proc(name)
            if slot not in slots:
                self.delete_pod("kube-system", name)
                continue
            ready = False
            if self.proc_status(name)[0] == "running":
                try:
                    with urllib.request.urlopen("http://%s:8181/ready" % DNS_SLOTS[slot], timeout=0.5) as r:
                        ready = r.status == 200
                except (OSError, urllib.error.URLError):
                    ready = False
            ready_count += ready
            node_idx = 1 + idx % NODES
            self.pod_status(name, "kube-system", node_idx, DNS_SLOTS[slot], {"k8s-app": "kube-dns"},
                            COREDNS_IMAGE, "coredns", ready)
            pods.append({"name": name, "ip": DNS_SLOTS[slot], "ready": ready, "node": node_name(node_idx),
                         "labels": {"k8s-app": "kube-dns"}})
        if dep is not None:
            st = {"observedGeneration": dep["metadata"].get("generation", 1), "replicas": len(slots),
                  "updatedReplicas": len(slots), "readyReplicas": ready_count,
                  "availableReplicas": ready_count, "unavailableReplicas": len(slots) - ready_count}
            self.write_once(("dep", "coredns"), json.dumps(st, sort_keys=True),
                            lambda: self.api.patch("/apis/apps/v1/namespaces/kube-system/deployments/coredns/status",
                                                   {"status": st}))
        for svc in ("kube-dns", "kube-dns-upstream"):
            self.sync_slice(svc, pods)

    def sync_slice(self, svc_name, pods):
        svc = self.api.get("/api/v1/namespaces/kube-system/services/" + svc_name)
        if svc is None or not svc["spec"].get("selector"):
            return  # selector-less Service: its slices belong to whoever wrote them
        sel = svc["spec"]["selector"]
        eps = []
        for p in pods:
            if all(p["labels"].get(k) == v for k, v in sel.items()):
                eps.append({"addresses": [p["ip"]], "nodeName": p["node"],
                            "conditions": {"ready": p["ready"], "serving": p["ready"], "terminating": False},
                            "targetRef": {"kind": "Pod", "namespace": "kube-system", "name": p["name"]}})
        ports = [{"name": pt.get("name", ""), "port": pt.get("targetPort", pt["port"]),
                  "protocol": pt.get("protocol", "TCP")} for pt in svc["spec"]["ports"]]
        name = svc_name + "-lab"
        body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": meta(name, "kube-system", {"kubernetes.io/service-name": svc_name,
                                                       "endpointslice.kubernetes.io/managed-by":
                                                       "endpointslice-controller.k8s.io"}),
                "addressType": "IPv4", "endpoints": eps, "ports": ports}
        path = "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices"

        def put():
            cur = self.api.get(path + "/" + name)
            if cur is None:
                self.api.create(path, body)
            else:
                self.api.patch(path + "/" + name, {"endpoints": eps, "ports": ports})
        self.write_once(("slice", name), json.dumps([eps, ports], sort_keys=True), put)

    # ---- workload pods standing for the pod namespaces
    def sync_workload_pods(self):
        for i in range(1, NODES + 1):
            self.pod_status("dnsutils-" + node_name(i), "default", i, pod_net(i) + ".2",
                            {"app": "dnsutils"}, "registry.k8s.io/e2e-test-images/agnhost:2.39",
                            "dnsutils", True)

    # ---- NodeLocal DNSCache
    def sync_nodelocal(self):
        ds = self.api.get("/apis/apps/v1/namespaces/kube-system/daemonsets/node-local-dns")
        cm = self.api.get("/api/v1/namespaces/kube-system/configmaps/node-local-dns")
        want = ds is not None and cm is not None and "Corefile" in (cm.get("data") or {})
        for i in range(1, NODES + 1):
            name = "node-cache-" + node_name(i)
            if not want:
                if self.nodecache.pop(i, None) is not None or pid_of(name):
                    log("node-local-dns gone: stopping %s" % name)
                    self.kill_proc(name)
                    self.procs.pop(name, None)
                    for ipaddr in read(sp("nodelocal", node_name(i), "localips"), "").split():
                        run(["ip", "-n", node_ns(i), "addr", "del", ipaddr + "/32", "dev", "lo"], check=False)
                self.delete_pod("kube-system", "node-local-dns-" + node_name(i))
                continue
            d = sp("nodelocal", node_name(i))
            base = os.path.join(d, "Corefile.base")
            if read(base) != cm["data"]["Corefile"]:
                write(base, cm["data"]["Corefile"])
            c = ds["spec"]["template"]["spec"]["containers"][0]
            args, env = self.nodecache_args(c.get("command", [])[1:] + c.get("args", []), d)
            sig = json.dumps([args, env])
            if self.nodecache.get(i) not in (None, sig):
                log("node-local-dns spec changed: restarting %s" % name)
                self.kill_proc(name)
                self.procs.pop(name, None)
            self.nodecache[i] = sig
            localips = [x for x in self.flag(args, "-localip").split(",") if x]
            write(os.path.join(d, "localips"), " ".join(localips))
            for ipaddr in localips:
                run(["ip", "-n", node_ns(i), "addr", "replace", ipaddr + "/32", "dev", "lo"])
            pidf = self.flag(args, "-pidfile")
            if self.proc_status(name)[0] != "running" and pidf and os.path.exists(pidf):
                os.unlink(pidf)  # stale: node-cache would set up its rules before CoreDNS runs
            self.ensure_proc(name, node_ns(i), [binpath("node-cache")] + args, env)
            ready = False
            if self.proc_status(name)[0] == "running":
                try:
                    r = nsrun(node_ns(i), ["dig", "+time=1", "+tries=1", "+short", "@" + localips[0],
                                           "kubernetes.default.svc.cluster.local"], check=False, timeout=5)
                    ready = r.returncode == 0 and bool(r.stdout.strip())
                except subprocess.TimeoutExpired:
                    ready = False
            self.pod_status("node-local-dns-" + node_name(i), "kube-system", i, node_ip(i),
                            {"k8s-app": "node-local-dns"}, c.get("image", NODECACHE_IMAGE), "node-cache", ready)

    @staticmethod
    def flag(args, name):
        for j, a in enumerate(args):
            if a == name and j + 1 < len(args):
                return args[j + 1]
            if a.startswith(name + "="):
                return a.split("=", 1)[1]
        return ""

    def nodecache_args(self, raw, d):
        """Container args -> process args: paths moved into the state dir, no dummy interface."""
        out, j = [], 0
        drop = {"-conf", "-basecorefile", "-setupinterface", "-kubednscm"}
        while j < len(raw):
            a = raw[j]
            key = a.split("=", 1)[0]
            if key in drop:
                j += 1 if "=" in a or key == "-setupinterface" else 2
                continue
            out.append(a)
            j += 1
        out += ["-setupinterface=false", "-basecorefile", os.path.join(d, "Corefile.base"),
                "-conf", os.path.join(d, "Corefile")]
        if not self.flag(out, "-pidfile"):
            # node-cache adds its iptables rules only at the first -syncinterval tick (60 s)
            # unless a pidfile is given: then as soon as CoreDNS inside it has written the pidfile.
            out += ["-pidfile", os.path.join(d, "node-cache.pid")]
        svc = self.flag(out, "-upstreamsvc") or "kube-dns"
        sobj = self.api.get("/api/v1/namespaces/kube-system/services/" + svc)
        env = {}
        if sobj:
            key = svc.upper().replace("-", "_")
            env = {key + "_SERVICE_HOST": sobj["spec"]["clusterIP"], key + "_SERVICE_PORT": "53"}
        return out, env

    # ---- the kubelet's log endpoint, so that `kubectl logs` / kubernetes.core.k8s_log work
    def note_log_sizes(self):
        """Remember (time, size) of every pod log once a second (the last two hours), so that the
        kubelet stand-in can answer sinceSeconds / sinceTime as a kubelet does."""
        now = time.time()
        for name in os.listdir(sp("logs")) if os.path.isdir(sp("logs")) else []:
            path = sp("logs", name)
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
            marks = self.log_marks.setdefault(path, [])
            if size < (marks[-1][1] if marks else 0):
                marks.clear()  # truncated (a test emptied it)
            if not marks or marks[-1][1] != size:
                marks.append((now, size))
            while marks and marks[0][0] < now - 7200 and len(marks) > 1:
                marks.pop(0)

    def log_offset(self, path, since):
        """Byte offset of the first line written at or after ``since`` (0 when unknown)."""
        offset = 0
        for t, size in self.log_marks.get(path, []):
            if t >= since:
                break
            offset = size
        return offset

    def start_kubelet_api(self):
        agent = self
        import http.server
        import urllib.parse

        def logfile(pod):
            if pod.startswith("coredns-"):
                return sp("logs", pod + ".log")
            if pod.startswith("node-local-dns-"):
                return sp("logs", "node-cache-" + pod[len("node-local-dns-"):] + ".log")
            return None

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(u.query)
                parts = u.path.strip("/").split("/")
                if u.path in ("/healthz", "/healthz/"):
                    return self.reply(200, b"ok")
                if len(parts) != 4 or parts[0] != "containerLogs":
                    return self.reply(404, b"not served by the clusterdns lab's kubelet stand-in\n")
                f = logfile(parts[2])
                data = read(f, None) if f else None
                if data is None:
                    return self.reply(404, b"no such container log\n")
                since = None
                if "sinceSeconds" in q:
                    since = time.time() - int(q["sinceSeconds"][0])
                elif "sinceTime" in q:
                    since = calendar.timegm(time.strptime(q["sinceTime"][0][:19], "%Y-%m-%dT%H:%M:%S"))
                if since is not None:
                    # what a runtime knows from its per-line timestamps: the agent notes each log's size
                    # once a second, so a line is as old as the first note that saw it
                    data = data[agent.log_offset(f, since):]
                lines = data.splitlines(True)
                if "tailLines" in q:
                    lines = lines[-int(q["tailLines"][0]):] if int(q["tailLines"][0]) > 0 else []
                body = "".join(lines).encode()
                if "limitBytes" in q:
                    body = body[:int(q["limitBytes"][0])]
                return self.reply(200, body)

            def reply(self, code, body):
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sp("pki", "apiserver.crt"), sp("pki", "apiserver.key"))
        home = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            for i in range(1, NODES + 1):
                # the listening socket is created inside the node's namespace, on its address
                setns("/run/netns/" + node_ns(i))
                try:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((node_ip(i), KUBELET_PORT))
                    sock.listen(16)
                finally:
                    if libc.setns(home, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns back to cp failed")
                srv = http.server.ThreadingHTTPServer((node_ip(i), KUBELET_PORT), Handler, bind_and_activate=False)
                srv.socket = ctx.wrap_socket(sock, server_side=True)
                threading.Thread(target=srv.serve_forever, daemon=True).start()
        finally:
            os.close(home)

    def loop(self):
        log("agent up (kubelet stand-in)")
        try:
            self.start_kubelet_api()
        except Exception as exc:  # noqa: BLE001 - pod logs are optional, DNS is not
            log("kubelet log endpoint not available: %s" % exc)
        stopping = []
        signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))
        while not stopping:
            t0 = time.time()
            for fn in (self.sync_coredns, self.sync_workload_pods, self.sync_nodelocal, self.note_log_sizes):
                try:
                    fn()
                except Exception as exc:  # noqa: BLE001 - keep supervising whatever fails
                    log("%s: %s" % (fn.__name__, exc))
            time.sleep(max(0.2, 1.0 - (time.time() - t0)))
        log("agent stopping (the processes it started keep running; labctl down stops them)")


# --------------------------------------------------------------------------------------------
# up / down / status


def upstream_conf():
    return "\n".join([
        "port=53", "no-resolv", "no-hosts", "log-queries", "log-facility=-", "pid-file=",
        "user=root",
        "local=/%s/" % LAB_ZONE,
        "host-record=www.%s,192.0.2.10" % LAB_ZONE,
        "host-record=api.%s,192.0.2.11" % LAB_ZONE,
        "host-record=db.%s,198.51.100.20" % LAB_ZONE,
        "address=/wild.%s/203.0.113.7" % LAB_ZONE,
        "txt-record=info.%s,clusterdns lab upstream" % LAB_ZONE,
    ]) + "\n"


def apiserver_readyz(port):
    ctx = ssl.create_default_context(cafile=sp("pki", "ca.crt"))
    with urllib.request.urlopen("https://127.0.0.1:%s/readyz" % port, context=ctx, timeout=3) as r:
        return r.read().strip() == b"ok"


def ensure_binaries():
    missing = [n for n in ("etcd", "etcdctl", "kube-apiserver", "kube-proxy", "coredns", "node-cache")
               if not os.access(binpath(n), os.X_OK)]
    if missing:
        log("building missing binaries: %s (progress below; a fully cold build took 21 min on 2 cores)" % ", ".join(missing))
        subprocess.run([os.path.join(HERE, "build.sh"), "all"], check=True)


def cmd_up(args):
    if os.geteuid() != 0:
        sys.exit("labctl up needs root (network namespaces, iptables)")
    t0 = time.time()
    ensure_binaries()
    if os.path.exists(sp("state.json")):
        sys.exit("lab state exists in %s: run labctl down first" % STATE)
    for n in ("pids", "logs", "hold", "coredns", "nodelocal"):
        os.makedirs(sp(n), exist_ok=True)
    st = {"started": time.time(), "nodes": NODES,
          "nf_conntrack_max": read("/proc/sys/net/netfilter/nf_conntrack_max", "").strip(),
          "faults": {}}
    save_state(st)
    try:
        log("network namespaces: %s" % " ".join(all_netns()))
        make_topology()
        make_pki()
        spawn("forwarder", None, [sys.executable, os.path.abspath(__file__), "_forward",
                                  sp("port"), "127.0.0.1:6443"])
        port = wait_for("loopback forwarder", lambda: (read(sp("port")) or "").strip(), 10)  # noqa: PLW0108  # pylint: disable=unnecessary-lambda
        st["port"] = int(port)
        save_state(st)
        write(sp("kubeconfig"), kubeconfig_text("https://127.0.0.1:%s" % port,
                                                read(sp("admin.token")).strip(), "admin"), 0o600)
        log("etcd %s" % ETCD_VERSION)
        spawn("etcd", CP, [binpath("etcd"), "--name", "lab", "--data-dir", sp("etcd"),
                           "--listen-client-urls", "http://127.0.0.1:2379",
                           "--advertise-client-urls", "http://127.0.0.1:2379",
                           "--listen-peer-urls", "http://127.0.0.1:2380",
                           "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                           "--initial-cluster", "lab=http://127.0.0.1:2380",
                           "--unsafe-no-fsync", "--log-level", "warn"])
        wait_for("etcd health", lambda: nsrun(CP, [binpath("etcdctl"), "--endpoints", "127.0.0.1:2379",
                                                   "endpoint", "health"], check=False).returncode == 0, 30)
        log("kube-apiserver %s" % K8S_VERSION)

        def pki(name):
            return sp("pki", name)

        spawn("kube-apiserver", CP, [
            binpath("kube-apiserver"), "--etcd-servers=http://127.0.0.1:2379",
            "--bind-address=0.0.0.0", "--secure-port=6443", "--advertise-address=" + CP_IP,
            "--service-cluster-ip-range=" + SERVICE_CIDR,
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-account-signing-key-file=" + pki("sa.key"),
            "--service-account-key-file=" + pki("sa.pub"),
            "--authorization-mode=Node,RBAC", "--token-auth-file=" + pki("tokens.csv"),
            "--client-ca-file=" + pki("ca.crt"),
            "--tls-cert-file=" + pki("apiserver.crt"), "--tls-private-key-file=" + pki("apiserver.key"),
            "--cert-dir=" + sp("pki"), "--profiling=false", "--v=1",
            # pod logs: the apiserver dials the node's kubelet port; the agent serves it (below)
            "--kubelet-preferred-address-types=InternalIP"])
        wait_for("kube-apiserver /readyz", lambda: apiserver_readyz(port), 90, 0.5)
        api = Api()
        bootstrap_objects(api)
        log("upstream dnsmasq (zone %s) in %s" % (LAB_ZONE, UPSTREAM))
        write(sp("upstream", "dnsmasq.conf"), upstream_conf())
        spawn("upstream-dnsmasq", UPSTREAM, ["/usr/sbin/dnsmasq", "-k", "--conf-file=" + sp("upstream", "dnsmasq.conf")])
        for i in range(1, NODES + 1):
            log("kube-proxy (iptables) in %s" % node_ns(i))
            spawn("kube-proxy-" + node_name(i), node_ns(i), [
                binpath("kube-proxy"), "--kubeconfig=" + sp("kubeconfig-kube-proxy-inlab"),
                "--hostname-override=" + node_name(i), "--proxy-mode=iptables",
                "--bind-address=" + node_ip(i), "--cluster-cidr=" + CLUSTER_CIDR,
                "--conntrack-max-per-core=0",
                "--metrics-bind-address=%s:10249" % node_ip(i),
                "--healthz-bind-address=%s:10256" % node_ip(i), "--v=2"])
        log("agent (kubelet stand-in) in %s" % CP)
        spawn("agent", CP, [sys.executable, os.path.abspath(__file__), "_agent"])
        wait_ready(120)
    except BaseException:
        log("up failed; logs in %s/logs (run labctl down to clean up)" % STATE)
        raise
    st = load_state()
    st["up_seconds"] = round(time.time() - t0, 1)
    save_state(st)
    log("lab up in %.1f s; kubeconfig: %s" % (time.time() - t0, sp("kubeconfig")))
    print(sp("kubeconfig"))


def kube_dns_rules(i):
    out = nsrun(node_ns(i), ["iptables", "-t", "nat", "-S", "KUBE-SERVICES"], check=False, capture=True)
    return "%s/32" % KUBE_DNS_IP in out


def pod_dig(i, name, extra=(), server=None):
    cmd = ["dig", "+time=2", "+tries=1", "+short"] + list(extra)
    if server:
        cmd.append("@" + server)
    r = nsrun(pod_ns(i), cmd + [name], check=False, timeout=20)
    return r.stdout.strip() if r.returncode == 0 else None


def wait_ready(timeout):
    api = Api()

    def dns_ready():
        dep = api.get("/apis/apps/v1/namespaces/kube-system/deployments/coredns")
        want = dep["spec"].get("replicas") or 0
        return (dep.get("status") or {}).get("readyReplicas", 0) >= min(want, len(DNS_SLOTS))
    wait_for("CoreDNS ready", dns_ready, timeout, 0.5)
    for i in range(1, NODES + 1):
        wait_for("kube-proxy rules on %s" % node_name(i), lambda i=i: kube_dns_rules(i), timeout, 0.5)
        wait_for("pod%d resolves kubernetes.default" % i,
                 lambda i=i: pod_dig(i, "kubernetes.default.svc.cluster.local") == "10.96.0.1", timeout, 0.5)


def lab_netns():
    out = run(["ip", "netns", "list"], capture=True)
    return [ln.split()[0] for ln in out.splitlines() if ln.split() and ln.split()[0].startswith(PREFIX)]


def cmd_down(args):
    if os.geteuid() != 0:
        sys.exit("labctl down needs root")
    # the agent first, so that it does not restart what we stop; then everything else at once
    stop("agent", 10)
    names = sorted(f[:-4] for f in os.listdir(sp("pids")) if f.endswith(".pid")) if os.path.isdir(sp("pids")) else []
    stop_all(names)
    st = load_state() if os.path.exists(sp("state.json")) else {}
    restore_conntrack_max(st)
    for ns in lab_netns():
        # anything still running in a lab namespace (e.g. a fault helper) goes with it
        pids = run(["ip", "netns", "pids", ns], check=False, capture=True).split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        run(["ip", "netns", "del", ns], check=False)
    for ns in os.listdir("/etc/netns") if os.path.isdir("/etc/netns") else []:
        if ns.startswith(PREFIX):
            for f in os.listdir("/etc/netns/" + ns):
                os.unlink(os.path.join("/etc/netns", ns, f))
            os.rmdir("/etc/netns/" + ns)
    if os.path.isdir(STATE):
        subprocess.run(["rm", "-rf", "--one-file-system", STATE], check=True)
    log("lab down")


def restore_conntrack_max(st):
    want = st.get("nf_conntrack_max")
    if want and read("/proc/sys/net/netfilter/nf_conntrack_max", "").strip() != want:
        write_sysctl("/proc/sys/net/netfilter/nf_conntrack_max", want)
        log("nf_conntrack_max restored to %s" % want)


def write_sysctl(path, value):
    with open(path, "w") as f:
        f.write(str(value))


def cmd_status(args):
    st = load_state() if os.path.exists(sp("state.json")) else None
    if not st:
        print("lab is down")
        return 1
    print("state: %s  api: https://127.0.0.1:%s  kubeconfig: %s" % (STATE, st.get("port"), sp("kubeconfig")))
    print("netns: %s" % " ".join(lab_netns()))
    for f in sorted(os.listdir(sp("pids"))):
        n = f[:-4]
        print("  %-24s %s" % (n, "pid %s" % pid_of(n) if pid_of(n) else "not running"))
    print("faults: %s" % (" ".join(sorted(st.get("faults", {}))) or "none"))
    return 0


# --------------------------------------------------------------------------------------------
# faults: each one makes the failure real; heal undoes exactly what fault did

FAULTS = {}


class Precondition(Exception):
    """The fault cannot be injected in the lab's current state; nothing was changed."""


FAULT_TAG = "clusterdns-lab fault"


def fault(name, doc):
    def reg(pair):
        FAULTS[name] = {"fault": pair[0], "heal": pair[1], "doc": doc}
        return pair
    return reg


def log_offsets():
    out = {}
    for slot in DNS_SLOTS:
        try:
            out[slot] = os.path.getsize(sp("logs", "coredns-%s.log" % slot))
        except OSError:
            out[slot] = 0
    return out


def log_since(slot, offset):
    with open(sp("logs", "coredns-%s.log" % slot), "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def wait_log(pattern, offsets, slots=None, timeout=30):
    slots = slots or list(DNS_SLOTS)
    wait_for("'%s' in the CoreDNS log of %s" % (pattern, ",".join(slots)),
             lambda: all(pattern in log_since(s, offsets[s]) for s in slots), timeout, 0.3)


def get_corefile(api):
    return api.get("/api/v1/namespaces/kube-system/configmaps/coredns")["data"]["Corefile"]


def set_corefile(api, text):
    api.patch("/api/v1/namespaces/kube-system/configmaps/coredns", {"data": {"Corefile": text}})


def edit_corefile(fn, expect="Reloading complete", timeout=40):
    """Edit the coredns ConfigMap through the API; wait until both replicas' reload reacted."""
    api = Api()
    before = get_corefile(api)
    after = fn(before)
    if expect == "Reloading complete":
        apply_corefile(api, after, timeout)
    else:
        offs = log_offsets()
        set_corefile(api, after)
        if expect:
            wait_log(expect, offs, timeout=timeout)
    return {"corefile": before}


def apply_corefile(api, text, timeout=40):
    """Write the Corefile to the ConfigMap and wait for every running replica's reload.

    A replica whose reload plugin missed the change within ``timeout`` (seen under full CPU load in
    CI: no reload logged for 80 s) is restarted onto the new Corefile, as deleting its pod would,
    and must then be ready; what was seen is logged first, so that such a run explains itself."""
    offs = log_offsets()
    set_corefile(api, text)
    running = [s for s in DNS_SLOTS if pid_of("coredns-" + s)]
    if not running:
        return
    try:
        wait_log("Reloading complete", offs, running, timeout)
    except RuntimeError as exc:
        missed = [s for s in running if "Reloading complete" not in log_since(s, offs[s])]
        log("reload not seen: %s; restarting CoreDNS %s" % (exc, ",".join(missed)))
        for s in missed:
            log("  coredns-%s (pid %s): Corefile on disk %s the ConfigMap; its log since the edit: %r"
                % (s, pid_of("coredns-" + s), "matches" if read(sp("coredns", s, "Corefile")) == text else "does NOT match",
                   log_since(s, offs[s])[-1500:]))
        log("  agent log tail: %r" % (read(sp("logs", "agent.log")) or "")[-1500:])
        old = {s: pid_of("coredns-" + s) for s in missed}
        restart_coredns(missed)
        wait_for("CoreDNS %s restarted onto the new Corefile and ready" % ",".join(missed), lambda: all(
            pid_of("coredns-" + s) not in (None, old[s]) for s in missed) and ready_replicas() >= len(running), 60, 1)


def restore_corefile(info):
    want = info.get("corefile") or default_corefile()
    if want:
        api = Api()
        if get_corefile(api) != want:
            apply_corefile(api, want)


def restart_coredns(slots):
    """Kill the CoreDNS processes; the agent (kubelet stand-in) starts them again (with back-off)."""
    for s in slots:
        stop("coredns-" + s, 8)


def hold(slot, on):
    path = sp("hold", "coredns-" + slot)
    if on:
        write(path, "held by labctl fault\n")
    elif os.path.exists(path):
        os.unlink(path)


def ready_replicas():
    dep = Api().get("/apis/apps/v1/namespaces/kube-system/deployments/coredns")
    return (dep.get("status") or {}).get("readyReplicas", 0)


def wait_clean(timeout=60):
    wait_ready(timeout)


def ipt(ns, table, args, check=True):
    return nsrun(ns, ["iptables", "-w", "-t", table] + args, check=check)


# -- coredns-down
def _down(opts):
    which = opts[0] if opts else "all"
    slots = list(DNS_SLOTS) if which == "all" else [which]
    for s in slots:
        hold(s, True)
    wait_for("CoreDNS %s stopped" % which, lambda: not any(pid_of("coredns-" + s) for s in slots), 30)
    wait_for("deployment shows the loss", lambda: ready_replicas() <= len(DNS_SLOTS) - len(slots), 30)
    if which == "all":
        wait_for("kube-proxy rejects (no endpoints)", lambda: "has no endpoints" in nsrun(
            node_ns(1), ["iptables-save", "-t", "filter"], capture=True), 30)
    return {"slots": slots}


def _up_again(info, opts):
    for s in DNS_SLOTS:
        hold(s, False)
    wait_clean()


fault("coredns-down", "CoreDNS replicas stop (labctl fault coredns-down [a|b|all], default all)")((_down, _up_again))


# -- coredns-single-replica
def _single(opts):
    Api().patch("/apis/apps/v1/namespaces/kube-system/deployments/coredns", {"spec": {"replicas": 1}})
    wait_for("one CoreDNS endpoint", lambda: len(Api().get(
        "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices/kube-dns-lab").get("endpoints") or []) == 1, 30)
    return {}


def _two(info, opts):
    Api().patch("/apis/apps/v1/namespaces/kube-system/deployments/coredns", {"spec": {"replicas": 2}})
    wait_clean()


fault("coredns-single-replica", "Deployment coredns scaled to 1 replica")((_single, _two))


# -- autopath
def _autopath(opts):
    def add(c):
        c = c.replace("    ready\n", "    ready\n    autopath @kubernetes\n", 1)
        return c.replace("pods insecure", "pods verified", 1)
    return edit_corefile(add)


fault("autopath", "autopath @kubernetes (+ pods verified) in the Corefile")((_autopath, lambda i, o: restore_corefile(i)))


# -- no-log-plugin
def _nolog(opts):
    def strip(c):
        return "".join(ln for ln in c.splitlines(True) if ln.strip() not in ("log", "errors"))
    return edit_corefile(strip)


fault("no-log-plugin", "Corefile without the log and errors plugins")((_nolog, lambda i, o: restore_corefile(i)))


# -- corefile-invalid
def _invalid(opts):
    info = edit_corefile(lambda c: c.replace("    cache 30\n", "    cache 30\n    cahce 30\n", 1),
                         expect="reload failed")
    # a replica that restarts now (as after a node drain or OOM kill) cannot start: crash loop
    offs = log_offsets()
    restart_coredns(["a"])
    wait_log("Unknown directive", offs, ["a"], 30)
    return info


def _valid(info, opts):
    restore_corefile(info)
    wait_clean()


fault("corefile-invalid", "unknown directive 'cahce' in the Corefile; replica a restarted into a crash loop")((_invalid, _valid))


# -- upstream-timeout
UPSTREAM_DROP = [["INPUT", "-p", p, "--dport", "53", "-m", "comment", "--comment", FAULT_TAG, "-j", "DROP"]
                 for p in ("udp", "tcp")]


def _uptimeout(opts):
    for r in UPSTREAM_DROP:
        ipt(UPSTREAM, "filter", ["-I"] + r)
    return {}


def _uptimeout_heal(info, opts):
    for r in UPSTREAM_DROP:
        ipt(UPSTREAM, "filter", ["-D"] + r, check=False)


fault("upstream-timeout", "the upstream DNS server drops every query (CoreDNS logs i/o timeout)")((_uptimeout, _uptimeout_heal))


# -- upstream-loop
STUB_RESOLV = ("# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).\n"
               "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n")


def _loop(opts):
    # CoreDNS (dnsPolicy: Default) inherits a node resolv.conf written by systemd-resolved, whose
    # stub address is 127.0.0.53.  Inside CoreDNS's own network namespace 127.0.0.53:53 is CoreDNS
    # itself (it listens on every address), so "forward . /etc/resolv.conf" loops back; the loop
    # plugin detects it at start and CoreDNS exits: crash loop on both replicas.
    for s in DNS_SLOTS:
        write("/etc/netns/%s/resolv.conf" % dns_ns(s), STUB_RESOLV)
    offs = log_offsets()
    restart_coredns(list(DNS_SLOTS))
    wait_log("Loop (", offs, timeout=40)
    return {}


def _loop_heal(info, opts):
    for s in DNS_SLOTS:
        write("/etc/netns/%s/resolv.conf" % dns_ns(s), "nameserver %s\n" % UPSTREAM_IP)
    stop("fault-loop-dnsmasq")  # left by older labctl versions
    restart_coredns([s for s in DNS_SLOTS if pid_of("coredns-" + s)])
    wait_clean(90)


fault("upstream-loop", "CoreDNS inherits a systemd-resolved stub resolv.conf (127.0.0.53 = itself): loop plugin exits")((_loop, _loop_heal))


# -- session-affinity
def _affinity(opts):
    Api().patch("/api/v1/namespaces/kube-system/services/kube-dns", {"spec": {"sessionAffinity": "ClientIP"}})
    wait_for("kube-proxy affinity rules", lambda: "--rcheck" in nsrun(
        node_ns(1), ["iptables-save", "-t", "nat"], capture=True), 30)
    return {}


def _affinity_heal(info, opts):
    Api().patch("/api/v1/namespaces/kube-system/services/kube-dns",
                {"spec": {"sessionAffinity": "None", "sessionAffinityConfig": None}})
    wait_for("affinity rules gone", lambda: "--rcheck" not in nsrun(
        node_ns(1), ["iptables-save", "-t", "nat"], capture=True), 30)


fault("session-affinity", "kube-dns Service with sessionAffinity: ClientIP")((_affinity, _affinity_heal))


# -- no-endpoints
def _noep(opts):
    api = Api()
    sel = api.get("/api/v1/namespaces/kube-system/services/kube-dns")["spec"]["selector"]
    api.patch("/api/v1/namespaces/kube-system/services/kube-dns", {"spec": {"selector": {"k8s-app": "kube-dns-v2"}}})
    wait_for("kube-proxy rejects (no endpoints)", lambda: "has no endpoints" in nsrun(
        node_ns(1), ["iptables-save", "-t", "filter"], capture=True), 30)
    return {"selector": sel}


def _noep_heal(info, opts):
    Api().patch("/api/v1/namespaces/kube-system/services/kube-dns",
                {"spec": {"selector": info.get("selector") or {"k8s-app": "kube-dns"}}})
    wait_clean()


fault("no-endpoints", "kube-dns selector matches no CoreDNS pod: empty EndpointSlice")((_noep, _noep_heal))


# -- rbac-endpointslices
CR = "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:coredns"


def _rbac(opts):
    api = Api()
    cr = api.get(CR)
    rules = [r for r in cr["rules"] if "endpointslices" not in r.get("resources", [])]
    api.req("PUT", CR, dict(cr, rules=rules))
    offs = log_offsets()
    restart_coredns(list(DNS_SLOTS))
    # CoreDNS 1.12 logs the reflector error without its text: "plugin/kubernetes: Failed to watch"
    wait_log("plugin/kubernetes: Failed to watch", offs, timeout=40)
    return {"rules": cr["rules"]}


def _rbac_heal(info, opts):
    api = Api()
    cr = api.get(CR)
    api.req("PUT", CR, dict(cr, rules=info.get("rules") or COREDNS_RULES))
    restart_coredns(list(DNS_SLOTS))
    wait_clean(90)


fault("rbac-endpointslices", "ClusterRole system:coredns loses list/watch on endpointslices; CoreDNS restarted")((_rbac, _rbac_heal))


# -- firewall-udp53
FW_RULE = ["FORWARD", "-p", "udp", "--dport", "53", "-m", "comment", "--comment", FAULT_TAG, "-j", "DROP"]


def _fw(opts):
    ipt(node_ns(1), "filter", ["-I"] + FW_RULE)
    return {}


def _fw_heal(info, opts):
    ipt(node_ns(1), "filter", ["-D"] + FW_RULE, check=False)


fault("firewall-udp53", "node1 drops forwarded UDP port 53 (pod1's queries; TCP still works)")((_fw, _fw_heal))


# -- dnsmasq-except-interface (seed 003)
def _dnsmasq_conf_path():
    # not /etc/netns/<ns>/dnsmasq.conf: ip netns exec only bind-mounts over files that exist in
    # the root's /etc, and this machine has no /etc/dnsmasq.conf (dnsmasq-base)
    return sp(node_name(1), "dnsmasq.conf")


def _dmq(opts):
    if pid_of("node-cache-" + node_name(1)):
        raise Precondition("turn NodeLocal DNSCache off first (labctl nodelocal off): port 53 on node1 is taken")
    write(_dnsmasq_conf_path(), "\n".join([
        "# node resolver, as in seed 003: listens on the node address, ignores Cilium interfaces",
        "port=53", "no-resolv", "no-hosts", "server=" + UPSTREAM_IP,
        "except-interface=cilium_*", "log-queries", "log-facility=-", "pid-file=", "user=root"]) + "\n")
    spawn("fault-node-dnsmasq", node_ns(1), ["/usr/sbin/dnsmasq", "-k", "--conf-file=" + _dnsmasq_conf_path()])
    wait_for("node dnsmasq answering locally", lambda: nsrun(node_ns(1), [
        "dig", "+time=1", "+tries=1", "+short", "@" + node_ip(1), "www." + LAB_ZONE],
        check=False).stdout.strip() == "192.0.2.10", 15)
    return {}


def _dmq_heal(info, opts):
    stop("fault-node-dnsmasq")
    if os.path.exists(_dnsmasq_conf_path()):
        os.unlink(_dnsmasq_conf_path())


fault("dnsmasq-except-interface", "node1 dnsmasq with except-interface=cilium_*; pod traffic enters on cilium_host")((_dmq, _dmq_heal))


# -- nodelocal-blackhole
def _bh_rules():
    rules = []
    for ipaddr in (NODELOCAL_IP, KUBE_DNS_IP):
        for p in ("udp", "tcp"):
            c = ["-m", "comment", "--comment", "NodeLocal DNS Cache: skip conntrack"]
            rules.append(("raw", ["PREROUTING", "-p", p, "-d", ipaddr, "--dport", "53"] + c + ["-j", "NOTRACK"]))
            rules.append(("raw", ["OUTPUT", "-p", p, "-d", ipaddr, "--dport", "53"] + c + ["-j", "NOTRACK"]))
            rules.append(("filter", ["INPUT", "-p", p, "-d", ipaddr, "--dport", "53", "-m", "comment",
                                     "--comment", "NodeLocal DNS Cache: allow DNS traffic", "-j", "ACCEPT"]))
    return rules


def _bh(opts):
    if pid_of("node-cache-" + node_name(1)):
        raise Precondition("turn NodeLocal DNSCache off first (labctl nodelocal off)")
    # what node-cache leaves when it dies with -skipteardown (or is SIGKILLed): addresses and
    # NOTRACK rules, no listener
    for ipaddr in (NODELOCAL_IP, KUBE_DNS_IP):
        run(["ip", "-n", node_ns(1), "addr", "replace", ipaddr + "/32", "dev", "lo"])
    for table, r in _bh_rules():
        ipt(node_ns(1), table, ["-I"] + r)
    return {}


def _bh_heal(info, opts):
    for table, r in _bh_rules():
        ipt(node_ns(1), table, ["-D"] + r, check=False)
    for ipaddr in (NODELOCAL_IP, KUBE_DNS_IP):
        run(["ip", "-n", node_ns(1), "addr", "del", ipaddr + "/32", "dev", "lo"], check=False)


fault("nodelocal-blackhole", "node1 keeps node-cache's NOTRACK rules and addresses with no listener")((_bh, _bh_heal))


# -- statefulset-servicename (seed 002)
# The StatefulSet is exposed by the headless Service web-headless, but its serviceName says "web".
# The StatefulSet controller gives pod web-0 hostname web-0 and subdomain "web" (the serviceName);
# the EndpointSlice controller sets an endpoint's hostname only when the pod's subdomain is the
# Service's name, so web-headless's slice carries web-0's address without a hostname. The lab has no
# controllers: the fault writes that slice as the controller would.  Result: web-headless resolves,
# web-0.web-headless (and web-0.web) do not.
STS_POD_IP = pod_net(1) + ".60"
STS_SLICE = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/web-headless-lab"


def _sts(opts):
    labels = {"app": "web"}
    api = Api()
    api.create("/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": meta("web-headless", "default", labels),
        "spec": {"clusterIP": "None", "selector": labels, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
    api.create("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": meta("web-headless-lab", "default", {"kubernetes.io/service-name": "web-headless",
                                                         "endpointslice.kubernetes.io/managed-by": "clusterdns-lab"}),
        "addressType": "IPv4",
        "endpoints": [{"addresses": [STS_POD_IP], "nodeName": node_name(1),
                       "conditions": {"ready": True, "serving": True, "terminating": False},
                       "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-0"}}],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})
    api.create("/apis/apps/v1/namespaces/default/statefulsets", {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta("web", "default", labels),
        "spec": {"serviceName": "web", "replicas": 1, "selector": {"matchLabels": labels},
                 "template": pod_template(labels, "web", "registry.k8s.io/e2e-test-images/agnhost:2.39",
                                          ["netexec"])}})
    wait_for("CoreDNS serves web-headless", lambda: pod_dig(1, "web-headless.default.svc.cluster.local") == STS_POD_IP, 30, 0.5)
    return {}


def _sts_heal(info, opts):
    api = Api()
    api.delete("/apis/apps/v1/namespaces/default/statefulsets/web")
    api.delete(STS_SLICE)
    api.delete("/api/v1/namespaces/default/services/web-headless")


fault("statefulset-servicename",
      "StatefulSet web with serviceName 'web' (no such Service) exposed by headless Service web-headless")((_sts, _sts_heal))


# -- tolerate-unready-annotation
def _tol(opts):
    api = Api()
    api.create("/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": meta("legacy-db", "default", {"app": "legacy-db"},
                         {"service.alpha.kubernetes.io/tolerate-unready-endpoints": "true"}),
        "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}})
    api.create("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": meta("legacy-db-lab", "default", {"kubernetes.io/service-name": "legacy-db",
                                                      "endpointslice.kubernetes.io/managed-by": "clusterdns-lab"}),
        "addressType": "IPv4",
        "endpoints": [{"addresses": [pod_net(1) + ".50"], "hostname": "legacy-db-0",
                       "conditions": {"ready": False, "serving": False, "terminating": False}}],
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]})
    return {}


def _tol_heal(info, opts):
    api = Api()
    api.delete("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/legacy-db-lab")
    api.delete("/api/v1/namespaces/default/services/legacy-db")


fault("tolerate-unready-annotation", "headless Service relying on tolerate-unready-endpoints, endpoint not ready")((_tol, _tol_heal))


# -- conntrack-full (destructive: lowers the global nf_conntrack_max; always restored)
#
# The table is filled with *established TCP connections* from pod1 to the upstream namespace,
# routed (and tracked) by node1.  Established TCP entries are ASSURED and cannot be early-dropped;
# unassured entries (one-way UDP) can: when the table is full the kernel evicts an unassured entry
# from the new flow's hash neighbourhood (early_drop) and its GC worker evicts them above 95 % of the
# limit, so a UDP fill let DNS through now and then (the flaky CI run of 2026-12-02).
CT_MAX = "/proc/sys/net/netfilter/nf_conntrack_max"
CT_GUARD_SECONDS = 180
CT_FILL_PORT0 = 20000
CT_FILL_PORTS = 4          # 4 x ~28k ephemeral source ports: far more than any fill needs
CT_FILL_SECONDS = 60       # bound of the connect loop
CT_FILL_NOFILE = 131072

# holds CT_FILL_PORTS listening sockets in the upstream namespace and every accepted connection,
# for at most CT_GUARD_SECONDS
CT_SERVER = """
import resource, select, socket, sys, time
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # without CAP_SYS_RESOURCE the hard limit cannot be raised
nofile = %(nofile)d if hard == resource.RLIM_INFINITY else min(%(nofile)d, hard)
resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
end = time.time() + %(life)d
ls = []
for port in range(%(port0)d, %(port0)d + %(nports)d):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((%(ip)r, port))
    s.listen(4096)
    s.setblocking(False)
    ls.append(s)
held = []
print("listening", flush=True)
while time.time() < end:
    r, _, _ = select.select(ls, [], [], 1.0)
    for s in r:
        while True:
            try:
                c, _ = s.accept()
            except BlockingIOError:
                break
            held.append(c)
"""

# opens up to N connections from pod1 (bounded in count and time), stops after 10 refused or
# timed-out connects in a row (the table is full), reports the count, then holds the sockets
CT_CLIENT = """
import resource, socket, sys, time
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # without CAP_SYS_RESOURCE the hard limit cannot be raised
nofile = %(nofile)d if hard == resource.RLIM_INFINITY else min(%(nofile)d, hard)
resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
n, deadline, life = %(n)d, time.time() + %(fill)d, time.time() + %(life)d
held, fails, i = [], 0, 0
while len(held) < n and time.time() < deadline and fails < 10:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect((%(ip)r, %(port0)d + i %% %(nports)d))
        held.append(s)
        fails = 0
    except OSError:
        s.close()
        fails += 1
    i += 1
open(%(done)r, "w").write("%%d %%d\\n" %% (len(held), fails))
while time.time() < life:
    time.sleep(1)
"""


def ct_counts():
    counts = {"(root)": int(read("/proc/sys/net/netfilter/nf_conntrack_count", "0"))}
    out = run(["ip", "netns", "list"], capture=True)
    for ln in out.splitlines():
        ns = ln.split()[0] if ln.split() else ""
        if ns:
            r = nsrun(ns, ["cat", "/proc/sys/net/netfilter/nf_conntrack_count"], check=False)
            if r.returncode == 0 and r.stdout.strip().isdigit():
                counts[ns] = int(r.stdout.strip())
    return counts


def _ct(opts):
    st = load_state()
    orig = st["nf_conntrack_max"]
    counts = ct_counts()
    busiest = max(c for ns, c in counts.items() if ns != node_ns(1))
    # every other namespace keeps >= 4096 free entries under the lowered limit
    new_max = max(busiest, counts.get(node_ns(1), 0)) + 4096
    if new_max > 60000 or new_max >= int(orig):
        raise Precondition("refusing: conntrack counts too high for a safe fill (%s)" % counts)
    # the guard restores the limit after CT_GUARD_SECONDS whatever happens to this process
    spawn("fault-conntrack-guard", None, [sys.executable, "-c",
          "import time,sys; time.sleep(%d); open(%r,'w').write(%r)" % (CT_GUARD_SECONDS, CT_MAX, orig)])
    params = {"nofile": CT_FILL_NOFILE, "life": CT_GUARD_SECONDS, "port0": CT_FILL_PORT0,
              "nports": CT_FILL_PORTS, "ip": UPSTREAM_IP, "fill": CT_FILL_SECONDS}
    spawn("fault-conntrack-server", UPSTREAM,
          [sys.executable, "-u", "-c", CT_SERVER % params])
    wait_for("the fill server", lambda: "listening" in read(sp("logs", "fault-conntrack-server.log"), ""),
             timeout=10)
    write_sysctl(CT_MAX, new_max)
    n = new_max - counts.get(node_ns(1), 0) + 64
    done = sp("fault-conntrack-fill.done")
    if os.path.exists(done):
        os.unlink(done)
    params.update(n=n, done=done)
    spawn("fault-conntrack-client", pod_ns(1), [sys.executable, "-c", CT_CLIENT % params])
    wait_for("the conntrack fill", lambda: os.path.exists(done), timeout=CT_FILL_SECONDS + 20)
    held, fails = (int(x) for x in read(done).split())
    log("conntrack fill: %d connections held, %d refused at the end; node1 count %s of %d"
        % (held, fails, nsrun(node_ns(1), ["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]).stdout.strip(),
           new_max))
    return {"orig": orig, "new_max": new_max, "fill": n, "held": held}


def _ct_heal(info, opts):
    st = load_state()
    orig = info.get("orig") or st.get("nf_conntrack_max")
    if orig:
        write_sysctl(CT_MAX, orig)
    stop_all(["fault-conntrack-guard", "fault-conntrack-client", "fault-conntrack-server"], 5)
    if "udp_timeout" in info:  # a fault applied by an older labctl
        nsrun(node_ns(1), ["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=%s" % info["udp_timeout"]],
              check=False)
    nsrun(node_ns(1), ["conntrack", "-D", "-d", UPSTREAM_IP], check=False)


fault("conntrack-full", "nf_conntrack_max lowered and node1's table filled from pod1 (destructive, auto-restored)")((_ct, _ct_heal))


# --------------------------------------------------------------------------------------------
# entry point


def cmd_kubeconfig(args):
    if not os.path.exists(sp("kubeconfig")):
        sys.exit("lab is down")
    print(sp("kubeconfig"))


def cmd_inventory(args):
    """Write an Ansible inventory whose clusterdns_nodes are the lab's node namespaces and print its path.

    Each node is reached with a local connection whose Python interpreter is a wrapper that enters
    the node's network namespace (``ip netns exec cdl-nodeN PYTHON``): modules see the node's
    interfaces, routes, iptables rules and conntrack table.  The filesystem, the kernel and its
    global settings (such as nf_conntrack_max) are the machine's.  ``--python PATH`` picks the
    interpreter (default: the one running labctl)."""
    if not os.path.exists(sp("kubeconfig")):
        sys.exit("lab is down")
    python = sys.executable
    if args[:1] == ["--python"] and len(args) > 1:
        python = os.path.abspath(args[1])
    os.makedirs(sp("bin"), exist_ok=True)
    hosts = []
    for i in range(1, NODES + 1):
        wrapper = sp("bin", "python-" + node_name(i))
        write(wrapper, '#!/bin/sh\nexec ip netns exec %s %s "$@"\n' % (node_ns(i), python), mode=0o755)
        hosts += ["        %s:" % node_name(i),
                  "          ansible_connection: local",
                  "          ansible_python_interpreter: %s" % wrapper,
                  "          clusterdns_lab_netns: %s" % node_ns(i),
                  "          clusterdns_lab_pod_netns: %s" % pod_ns(i)]
    text = "\n".join([
        "# clusterdns lab inventory (labctl inventory): the lab's nodes as network namespaces",
        "all:",
        "  vars:",
        "    clusterdns_kubeconfig: %s" % sp("kubeconfig"),
        "    clusterdns_kube_dns_ips: [%s]" % KUBE_DNS_IP,
        "  children:",
        "    clusterdns_nodes:",
        "      hosts:"] + hosts) + "\n"
    write(sp("inventory.yml"), text)
    print(sp("inventory.yml"))


def cmd_nodelocal(args):
    api = Api()
    cm, ds = nodelocal_objects()
    if args and args[0] == "on":
        api.create("/api/v1/namespaces/kube-system/configmaps", cm)
        api.create("/apis/apps/v1/namespaces/kube-system/daemonsets", ds)
        wait_for("node-cache answering on every node", lambda: all(
            nsrun(node_ns(i), ["dig", "+time=1", "+tries=1", "+short", "@" + NODELOCAL_IP,
                               "kubernetes.default.svc.cluster.local"], check=False).stdout.strip() == "10.96.0.1"
            and "NodeLocal DNS Cache" in nsrun(node_ns(i), ["iptables-save", "-t", "raw"], capture=True)
            for i in range(1, NODES + 1)), 60, 1)
    elif args and args[0] == "off":
        api.delete("/apis/apps/v1/namespaces/kube-system/daemonsets/node-local-dns")
        api.delete("/api/v1/namespaces/kube-system/configmaps/node-local-dns")
        wait_for("node-cache stopped", lambda: not any(pid_of("node-cache-" + node_name(i))
                                                       for i in range(1, NODES + 1)), 60, 0.5)
        wait_for("node-local addresses removed from lo", lambda: not any(
            NODELOCAL_IP in run(["ip", "-n", node_ns(i), "addr", "show", "dev", "lo"], capture=True)
            for i in range(1, NODES + 1)), 30, 0.5)
    else:
        sys.exit("usage: labctl nodelocal on|off")


def cmd_fault(args, heal=False):
    if not args or args[0] not in FAULTS:
        sys.exit("usage: labctl %s NAME [options]; names: %s" % ("heal" if heal else "fault", " ".join(sorted(FAULTS))))
    name = args[0]
    st = load_state()
    f = FAULTS[name]
    if heal:
        f["heal"](st.get("faults", {}).get(name) or {}, args[1:])
        st = load_state()
        st.get("faults", {}).pop(name, None)
    else:
        # recorded before it is injected: a fault that fails half-way can still be healed (the
        # heal functions fall back to the lab defaults when the saved info is missing)
        st.setdefault("faults", {})[name] = {"injecting": True}
        save_state(st)
        try:
            info = f["fault"](args[1:]) or {}
        except Precondition as exc:
            st = load_state()
            st["faults"].pop(name, None)
            save_state(st)
            sys.exit("labctl fault %s: %s" % (name, exc))
        st = load_state()
        st.setdefault("faults", {})[name] = info
    save_state(st)
    log("%s %s: done" % ("healed" if heal else "injected", name))


def cmd_faults(args):
    for n in sorted(FAULTS):
        print("%-28s %s" % (n, FAULTS[n]["doc"]))


def main(argv):
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "_forward":
        forwarder_main(rest[0], rest[1])
        return 0
    if cmd == "_agent":
        Agent().loop()
        return 0
    table = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "kubeconfig": cmd_kubeconfig,
             "fault": cmd_fault, "heal": lambda a: cmd_fault(a, heal=True), "faults": cmd_faults,
             "nodelocal": cmd_nodelocal, "inventory": cmd_inventory}
    if cmd not in table:
        print(__doc__)
        return 2
    return table[cmd](rest) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

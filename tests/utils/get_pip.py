# Stand-in for ansible-test's get-pip download (its host is not reachable from CI machines).
# ansible-test looks for ~/.ansible/test/cache/get_pip_<version>.py before downloading;
# `make setup` copies this file there. It bootstraps pip from CPython's ensurepip in a child
# process (in-process ensurepip hides /etc/pip.conf) and then installs what was asked.
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--upgrade", *args]))

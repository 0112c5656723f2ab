# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Node test bed: network namespaces, veth pairs and a real dnsmasq, made and removed by a test."""

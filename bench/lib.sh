# Sourced by the benchmark scripts.
# free_ports N: N distinct free TCP ports on 127.0.0.1, on one line. All N sockets are held open
# until every port is chosen, so the kernel cannot hand out the same port twice (choosing them one
# at a time could, since a port chosen earlier is not bound until its service starts).
free_ports() {
  python3 -c '
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

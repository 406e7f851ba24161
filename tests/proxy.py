"""A small forwarding proxy on loopback for tests: CONNECT tunnels and absolute-URI requests.

It records the target of every request it carried, so a test can tell whether the gateway's
backend traffic went through it.
"""

import select
import socket
import socketserver
import threading


class TestProxy:
    __test__ = False

    def __init__(self):
        self.targets = []  # "host:port" of every connection carried
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                head = b""
                while b"\r\n\r\n" not in head:
                    data = self.connection.recv(65536)
                    if not data:
                        return
                    head += data
                request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
                method, target, _ = request_line.split(" ", 2)
                if method == "CONNECT":
                    host, port = target.rsplit(":", 1)
                    rest = b""
                else:  # "POST http://host:port/path HTTP/1.1": forwarded as it is
                    authority = target.split("://", 1)[1].split("/", 1)[0]
                    host, _, port = authority.partition(":")
                    port = port or "80"
                    rest = head
                with proxy.lock:
                    proxy.targets.append(f"{host}:{port}")
                upstream = socket.create_connection((host, int(port)), timeout=30)
                if method == "CONNECT":
                    self.connection.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                else:
                    upstream.sendall(rest)
                self._pipe(self.connection, upstream)

            @staticmethod
            def _pipe(a, b):
                sockets = [a, b]
                try:
                    while True:
                        readable, _, _ = select.select(sockets, [], [], 30)
                        if not readable:
                            return
                        for s in readable:
                            data = s.recv(65536)
                            if not data:
                                return
                            (b if s is a else a).sendall(data)
                except OSError:
                    return
                finally:
                    b.close()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 128

        self.lock = threading.Lock()
        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()  # quick stop()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

"""A small Python language host for the Pulumi engine (``pulumi-language-python``).

No registry here ships Pulumi's own ``pulumi-language-python`` binary, and its Go module
is not published at any version, so `make install` puts this stand-in in its place when
no matching binary is on PATH. It serves the same gRPC contract, running the program
in-process the way Pulumi's Automation API runs inline programs, and reports no
required plugins: everything this project needs is a dynamic provider, and nothing must
be downloaded.
"""

from __future__ import annotations

import os
import runpy
import sys
from concurrent import futures

import grpc
from pulumi.automation._server import LanguageServer
from pulumi.runtime.proto import language_pb2_grpc

from flocker_provider.engine_watch import end_with_engine


class ProjectLanguageServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__(program=lambda: None)

    def Run(self, request, context):  # noqa: N802 - gRPC method name
        directory = request.info.program_directory or os.path.join(request.pwd, request.program)
        entry = request.info.entry_point or "."
        main = os.path.join(directory, "__main__.py" if entry in (".", "") else entry)
        os.chdir(request.pwd or directory)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        self.program = lambda: runpy.run_path(main, run_name="__main__")
        return super().Run(request, context)


def main() -> None:
    end_with_engine()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(ProjectLanguageServer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    # The engine reads the port from the first line of stdout.
    print(port, flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:  # the engine interrupts its plugins when it is done
        server.stop(0)


if __name__ == "__main__":
    main()

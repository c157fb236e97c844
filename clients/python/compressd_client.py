#!/usr/bin/env python3
"""Example compressd client: streams generated text to stdout.

Needs only Debian's python3-grpcio and python3-grpc-tools (or protobuf-compiler-grpc): the
stubs are generated at run time from proto/compressd/v1/generation.proto into a temporary
directory.

  python3 clients/python/compressd_client.py --address 127.0.0.1:50051 \
      --prompt "Once upon a time" --max-tokens 64 --temperature 0

Exit codes: 0 ok, 1 RPC error (status printed to stderr), 2 bad usage.
"""

import argparse
import atexit
import importlib
import os
import shutil
import subprocess
import sys
import tempfile

DEFAULT_PROTO_ROOT = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto"))


def _run_protoc(proto_root, out, proto):
    """grpc_tools.protoc first; Debian's grpc_tools (1.14) predates proto3 `optional`, so
    fall back to the system protoc with grpc_python_plugin (protobuf-compiler-grpc)."""
    try:
        from grpc_tools import protoc  # Debian: python3-grpc-tools
    except ImportError:
        protoc = None
    if protoc is not None:
        args = ["protoc", f"-I{proto_root}", f"--python_out={out}", f"--grpc_python_out={out}",
                proto]
        wkt = os.path.join(os.path.dirname(protoc.__file__), "_proto")
        if os.path.isdir(wkt):
            args.insert(1, f"-I{wkt}")
        # Silence its complaints when it is too old; the fallback below reports real errors.
        saved = os.dup(2)
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                rc = protoc.main(args)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
        if rc == 0:
            return
    plugin = shutil.which("grpc_python_plugin")
    system_protoc = shutil.which("protoc")
    if plugin is None or system_protoc is None:
        sys.exit("compressd_client: no usable protoc (install python3-grpc-tools or "
                 "protobuf-compiler + protobuf-compiler-grpc)")
    rc = subprocess.call([system_protoc, f"-I{proto_root}", f"--python_out={out}",
                          f"--grpc_out={out}", f"--plugin=protoc-gen-grpc={plugin}", proto])
    if rc != 0:
        sys.exit("compressd_client: protoc failed")


def load_stubs(proto_root):
    """Generates the stubs into a temp dir and imports them."""
    out = tempfile.mkdtemp(prefix="compressd_stubs_")
    proto = os.path.join(proto_root, "compressd", "v1", "generation.proto")
    if not os.path.exists(proto):
        sys.exit(f"compressd_client: {proto} not found (use --proto-root)")
    try:
        _run_protoc(proto_root, out, proto)
        sys.path.insert(0, out)
        pb2 = importlib.import_module("compressd.v1.generation_pb2")
        pb2_grpc = importlib.import_module("compressd.v1.generation_pb2_grpc")
    finally:
        atexit.register(shutil.rmtree, out, True)
    return pb2, pb2_grpc


def make_channel(grpc, args):
    if not args.tls_ca and not args.tls_cert:
        return grpc.insecure_channel(args.address)

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    creds = grpc.ssl_channel_credentials(
        root_certificates=read(args.tls_ca) if args.tls_ca else None,
        private_key=read(args.tls_key) if args.tls_key else None,
        certificate_chain=read(args.tls_cert) if args.tls_cert else None)
    return grpc.secure_channel(args.address, creds)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", default="127.0.0.1:50051", help="server host:port")
    p.add_argument("--prompt", default="Once upon a time", help="prompt text")
    p.add_argument("--chat", action="store_true",
                   help="send --prompt as a user chat message (the model's chat template)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--timeout", type=float, default=120.0, help="deadline in seconds")
    p.add_argument("--usage", action="store_true", help="print usage to stderr at the end")
    p.add_argument("--info", action="store_true", help="print GetModelInfo and exit")
    p.add_argument("--proto-root", default=DEFAULT_PROTO_ROOT)
    p.add_argument("--tls-ca", help="PEM CA that signed the server certificate")
    p.add_argument("--tls-cert", help="PEM client certificate (mTLS)")
    p.add_argument("--tls-key", help="PEM client key (mTLS)")
    args = p.parse_args(argv)

    import grpc  # Debian: python3-grpcio

    pb2, pb2_grpc = load_stubs(args.proto_root)
    with make_channel(grpc, args) as channel:
        stub = pb2_grpc.GenerationStub(channel)
        try:
            if args.info:
                print(stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=args.timeout))
                return 0
            req = pb2.GenerateRequest(max_tokens=args.max_tokens, stop=args.stop,
                                      ignore_eos=args.ignore_eos)
            if args.chat:
                req.chat.messages.add(role="user", content=args.prompt)
            else:
                req.prompt = args.prompt
            req.sampling.temperature = args.temperature
            req.sampling.top_p = args.top_p
            req.sampling.top_k = args.top_k
            if args.seed is not None:
                req.sampling.seed = args.seed
            final = None
            for msg in stub.Generate(req, timeout=args.timeout):
                sys.stdout.write(msg.text)
                sys.stdout.flush()
                if msg.finished:
                    final = msg
            sys.stdout.write("\n")
            if args.usage and final is not None:
                u = final.usage
                reason = pb2.FinishReason.Name(final.finish_reason)
                print(f"[{final.request_id}] {reason} prompt_tokens={u.prompt_tokens} "
                      f"completion_tokens={u.completion_tokens} ttft={u.time_to_first_token_s:.3f}s "
                      f"e2e={u.e2e_latency_s:.3f}s", file=sys.stderr)
        except grpc.RpcError as e:
            print(f"compressd_client: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

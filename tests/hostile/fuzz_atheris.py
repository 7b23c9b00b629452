"""Coverage-guided fuzzing (atheris, libFuzzer) of everything that parses bytes from a peer:
the frame reader, header infos, stream frames and message payloads. Each must return a
result or raise the project's own error (ProtocolError, DecodeError); anything else is a
crash that libFuzzer reports with the input that caused it.

    python tests/hostile/fuzz_atheris.py -runs=1000000      # or -max_total_time=600

test_fuzz.py runs it for a bounded number of inputs when atheris is installed.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from rpcpoll.examples.echo_rpc import EchoRequest
    from rpcpoll.examples.route_guide_rpc import RouteNote
    from rpcpoll.message import DecodeError
    from rpcpoll.protocol.frame import FrameReader, ProtocolError, parse_info
    from rpcpoll.protocol.stream import parse_stream_frame
    from rpcpoll.transport.linkbuffer import LinkBuffer


def one_input(data: bytes) -> None:
    if not data:
        return
    what, body = data[0] % 4, data[1:]
    if what == 0:  # a byte stream: frames, then each frame's header and stream event
        reader = FrameReader(1 << 16)
        buf = LinkBuffer()
        try:
            buf.write_binary(body)
            buf.flush()
            while True:
                try:
                    raw = reader.read_raw(buf)
                except ProtocolError:
                    return
                if raw is None:
                    return
                seq_id, _flags, info, payload = raw
                try:
                    parse_info(info, 8)
                except ProtocolError:
                    pass
                try:
                    parse_stream_frame(seq_id, info, payload, 8)
                except ProtocolError:
                    pass
        finally:
            buf.close()
    elif what == 1:  # a header info alone
        try:
            parse_info(body, None)
        except ProtocolError:
            pass
    elif what == 2:  # a stream frame's header info
        try:
            parse_stream_frame(1, body, b"", None)
        except ProtocolError:
            pass
    else:  # message payloads
        for message in (EchoRequest, RouteNote):
            try:
                message.from_bytes(body)
            except DecodeError:
                pass


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

"""`python -m gateway <command>`: the gateway's command line. Today one command, `check`."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description="llm-gateway's command line")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check",
        help="check a config as start-up does; show models, backends and the headers a request sends",
        description="Checks the config exactly as start-up does and shows what it means. "
        "Exit status 1, with start-up's error message, for a config the gateway would refuse.",
    )
    check.add_argument("config", nargs="?", help="the TOML file (default: GATEWAY_CONFIG, else gateway.toml, else the built-in demo)")
    args = parser.parse_args(argv)

    # A terminal that cannot show a character (a Korean name in the sample) must not crash the report.
    sys.stdout.reconfigure(errors="backslashreplace")
    from .check import run  # loads requests (to build the backends as a worker does): only when asked

    return run(args.config)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `python -m gateway check | head`: the reader has all it wanted
        sys.stderr.close()  # nothing more to say, and nothing Python should complain about at exit
        sys.exit(0)

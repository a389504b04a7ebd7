"""A fake of the iptables commands the router runs (kernel_forwarding.py): unit tests must never touch this machine's own."""

from __future__ import annotations


class FakeIptables:
    """Answers the router's iptables commands from a table of prefixes; records every call."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str]] | None = None) -> None:
        self.answers = {
            ("iptables-nft-save",): (0, "*filter\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\nCOMMIT\n"),
            ("iptables-legacy-save",): (0, ""),
            **(answers or {}),
        }
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, args: list[str], stdin: str | None) -> tuple[int, str]:
        self.calls.append((args, stdin))
        # The longest matching prefix, ignoring the lock wait option.
        words = tuple(w for i, w in enumerate(args) if w != "-w" and (i == 0 or args[i - 1] != "-w"))
        for length in range(len(words), 0, -1):
            if words[:length] in self.answers:
                return self.answers[words[:length]]
        return 0, ""

    def restores(self) -> list[str]:
        return [stdin for args, stdin in self.calls if args[0].endswith("-restore") and stdin is not None]

    def commands(self) -> list[list[str]]:
        """Every call's arguments (restores too), without the lock wait option."""
        return [[w for i, w in enumerate(args) if w != "-w" and args[i - 1] != "-w"] for args, _ in self.calls]

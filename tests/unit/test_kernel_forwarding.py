"""Kernel forwarding (on_node/kernel_forwarding.py): the iptables rules the router computes, and what it runs, with a fake runner."""

from __future__ import annotations

import pytest
from iptables_fake import FakeIptables

from flocker_provider.on_node import kernel_forwarding

TAG = "flocker-unit.router"
NAMES = kernel_forwarding.rule_names(TAG)
MARK = f'-m comment --comment "{NAMES.comment}"'


def test_chain_names_fit_iptables_and_tell_stacks_apart() -> None:
    other = kernel_forwarding.rule_names("flocker-another-stack-with-a-very-long-name.router")
    for names in (NAMES, other):
        assert all(len(chain) <= 28 and chain.startswith("FLKR-") for chain in (names.dnat, names.snat, names.accept))
    assert {NAMES.dnat, NAMES.snat, NAMES.accept}.isdisjoint({other.dnat, other.snat, other.accept})
    assert NAMES.comment == f"flocker-router:{TAG}"
    assert " " not in kernel_forwarding.rule_names("a stack; with spaces").comment


def test_restore_input_swaps_our_chains_and_dnats_only_the_forwarded_ports() -> None:
    text = kernel_forwarding.restore_input(NAMES, {8701: ("10.0.0.2", 32768)}, [8702, 8701])
    lines = text.splitlines()
    # Declaring the chains flushes them: the restore replaces everything of ours at once.
    assert lines[:3] == ["*nat", f":{NAMES.dnat} - [0:0]", f":{NAMES.snat} - [0:0]"]
    assert f"-A {NAMES.dnat} -p tcp --dport 8701 -m comment --comment {NAMES.comment} -j DNAT --to-destination 10.0.0.2:32768" in lines
    assert sum("-j DNAT" in line for line in lines) == 1
    # MASQUERADE and ACCEPT for every routed port: connections forwarded before a change keep working.
    for port in (8701, 8702):
        dnatted = f"-p tcp -m conntrack --ctstate DNAT --ctorigdstport {port} -m comment --comment {NAMES.comment}"
        assert f"-A {NAMES.snat} {dnatted} -j MASQUERADE" in lines
        assert f"-A {NAMES.accept} {dnatted} -j ACCEPT" in lines
    assert lines[lines.index("*filter") + 1] == f":{NAMES.accept} - [0:0]"
    assert lines.count("COMMIT") == 2
    assert not any(line.startswith("-I ") for line in lines)


def test_restore_input_at_start_inserts_the_jumps_first() -> None:
    lines = kernel_forwarding.restore_input(NAMES, {}, [], jumps_into="DOCKER-USER").splitlines()
    assert f"-I PREROUTING 1 -m addrtype --dst-type LOCAL -m comment --comment {NAMES.comment} -j {NAMES.dnat}" in lines
    assert f"-I POSTROUTING 1 -m comment --comment {NAMES.comment} -j {NAMES.snat}" in lines
    assert f"-I DOCKER-USER 1 -m comment --comment {NAMES.comment} -j {NAMES.accept}" in lines
    # Each jump in the table its chain is in.
    assert lines.index("*filter") < lines.index(f"-I DOCKER-USER 1 -m comment --comment {NAMES.comment} -j {NAMES.accept}")


def test_only_rules_with_our_exact_comment_are_deleted() -> None:
    ours = f"-A PREROUTING -m addrtype --dst-type LOCAL {MARK} -j {NAMES.dnat}"
    assert kernel_forwarding.deletion_of(ours, NAMES.comment) == [
        "-D",
        "PREROUTING",
        *["-m", "addrtype", "--dst-type", "LOCAL", "-m", "comment", "--comment", NAMES.comment, "-j", NAMES.dnat],
    ]
    for line in (
        "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
        f'-A PREROUTING -m comment --comment "{NAMES.comment}-other" -j X',  # another stack whose name starts like ours
        f"-N {NAMES.dnat}",
        "-P FORWARD DROP",
        '-A FORWARD -m comment --comment "unbalanced',
    ):
        assert kernel_forwarding.deletion_of(line, NAMES.comment) is None, line


@pytest.mark.parametrize(
    ("nft", "legacy", "chosen"),
    [
        ((0, "-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN"), (0, ""), "iptables-nft"),
        ((0, ""), (0, "-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN"), "iptables-legacy"),
        ((0, ""), (0, ""), "iptables-nft"),
        ((1, "Permission denied (you must be root)"), (127, "not found"), None),
        ((127, "not found"), (127, "not found"), None),
    ],
    ids=["nft", "legacy", "tie", "no-permission", "missing"],
)
def test_the_backend_with_dockers_rules_is_chosen(nft: tuple[int, str], legacy: tuple[int, str], chosen: str | None) -> None:
    fake = FakeIptables({("iptables-nft-save",): nft, ("iptables-legacy-save",): legacy})
    assert kernel_forwarding.choose_backend(fake) == chosen


def test_start_removes_stale_rules_of_ours_only_then_installs_the_jumps() -> None:
    stale = f"-A PREROUTING -m addrtype --dst-type LOCAL {MARK} -j {NAMES.dnat}"
    fake = FakeIptables(
        {
            ("iptables-nft", "-t", "nat", "-S", "PREROUTING"): (
                0,
                f"-P PREROUTING ACCEPT\n{stale}\n-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
            ),
            ("iptables-nft", "-t", "nat", "-S", NAMES.dnat): (0, f"-N {NAMES.dnat}"),
            ("iptables-nft", "-t", "nat", "-S", NAMES.snat): (1, "No chain/target/match by that name."),
            ("iptables-nft", "-t", "filter", "-S", NAMES.accept): (1, "No chain/target/match by that name."),
        }
    )
    kernel = kernel_forwarding.KernelForwarding(TAG, runner=fake)
    assert kernel.start()
    assert kernel.enabled and kernel.backend == "iptables-nft" and kernel.forward_chain == "DOCKER-USER"
    commands = fake.commands()
    deletions = [c for c in commands if "-D" in c]
    # The quotes iptables -S prints are gone: the comment is one argument again.
    jump = ["-m", "addrtype", "--dst-type", "LOCAL", "-m", "comment", "--comment", NAMES.comment, "-j", NAMES.dnat]
    assert deletions == [["iptables-nft", "-t", "nat", "-D", "PREROUTING", *jump]]
    assert ["iptables-nft", "-t", "nat", "-F", NAMES.dnat] in commands
    assert ["iptables-nft", "-t", "nat", "-X", NAMES.dnat] in commands
    assert ["iptables-nft", "-t", "nat", "-X", NAMES.snat] not in commands  # not there: nothing to delete
    (restore,) = fake.restores()
    assert f"-I DOCKER-USER 1 -m comment --comment {NAMES.comment} -j {NAMES.accept}" in restore
    assert fake.calls[-1][0][:3] == ["iptables-nft-restore", "-w", "10"] and "--noflush" in fake.calls[-1][0]


def test_a_take_over_drops_syns_to_its_ports_and_takes_exactly_those_rules_away() -> None:
    ours = f"-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m multiport --dports 80,9200 {MARK} -j DROP"
    listing = f"-P INPUT ACCEPT\n{ours}\n-A INPUT -p tcp --dport 22 -j ACCEPT"
    fake = FakeIptables({("iptables-nft", "-t", "filter", "-S", "INPUT"): (0, listing)})
    kernel = kernel_forwarding.KernelForwarding(TAG, runner=fake)
    assert kernel.start()
    ports = list(range(9000, 9017))  # 17 ports: two rules, multiport takes 15
    assert kernel.drop_syns(ports)
    inserted = [c for c in fake.commands() if c[3:5] == ["-I", "INPUT"]]
    assert [c[c.index("--dports") + 1] for c in inserted] == [",".join(map(str, range(9000, 9015))), "9015,9016"]
    assert all(c[-2:] == ["-j", "DROP"] and "--syn" in c and NAMES.comment in c for c in inserted)
    kernel.release_syns()
    deletions = [c for c in fake.commands() if "-D" in c and "INPUT" in c]
    assert deletions[-1][3:5] == ["-D", "INPUT"] and "22" not in deletions[-1]
    # A router killed while taking over: the next one's start removes its drops too.
    assert any(c[3:5] == ["-D", "INPUT"] for c in fake.commands()[: fake.commands().index(inserted[0])])


def test_without_dockers_chain_the_accepts_go_into_forward() -> None:
    fake = FakeIptables({("iptables-nft", "-t", "filter", "-S", "DOCKER-USER"): (1, "No chain/target/match by that name.")})
    kernel = kernel_forwarding.KernelForwarding(TAG, runner=fake)
    assert kernel.start()
    assert f"-I FORWARD 1 -m comment --comment {NAMES.comment} -j {NAMES.accept}" in fake.restores()[0]


def test_apply_restores_only_changes_and_a_failure_turns_kernel_forwarding_off() -> None:
    fake = FakeIptables()
    kernel = kernel_forwarding.KernelForwarding(TAG, runner=fake)
    assert kernel.start()
    assert kernel.apply({8701: ("10.0.0.2", 32768)}, [8701])
    assert kernel.apply({8701: ("10.0.0.2", 32768)}, [8701])  # unchanged: no second restore
    assert len(fake.restores()) == 2
    assert kernel.applied == ({8701: ("10.0.0.2", 32768)}, frozenset({8701}))

    fake.answers[("iptables-nft-restore",)] = (1, "iptables-nft-restore: line 3 failed")
    assert not kernel.apply({}, [8701])
    assert not kernel.enabled
    # Turning off removes our rules, so no DNAT is left to a target that may go away.
    assert ["iptables-nft", "-t", "nat", "-S", NAMES.dnat] in fake.commands()
    assert not kernel.apply({8701: ("10.0.0.2", 32768)}, [8701])


def test_no_iptables_means_proxy_only() -> None:
    fake = FakeIptables({("iptables-nft-save",): (127, "not found"), ("iptables-legacy-save",): (127, "not found")})
    kernel = kernel_forwarding.KernelForwarding(TAG, runner=fake)
    assert not kernel.start()
    assert not kernel.enabled
    assert not kernel.apply({8701: ("10.0.0.2", 32768)}, [8701])
    kernel.stop()
    assert [args[0] for args, _ in fake.calls] == ["iptables-nft-save", "iptables-legacy-save"]


def test_only_ipv4_targets_on_other_nodes_are_forwarded_by_the_kernel() -> None:
    kernel = kernel_forwarding.KernelForwarding(TAG, runner=FakeIptables(), is_local=lambda host: host == "10.0.0.1")
    assert kernel.can_forward_to(("10.0.0.2", 32768))
    assert not kernel.can_forward_to(("10.0.0.1", 32768))  # this node: the proxy
    assert not kernel.can_forward_to(None)
    assert not kernel.can_forward_to(("fd00::2", 32768))
    assert not kernel.can_forward_to(("node2.example", 32768))
    assert kernel_forwarding.is_local_address("127.0.0.1")
    assert not kernel_forwarding.is_local_address("192.0.2.123")  # TEST-NET-1: nobody's address

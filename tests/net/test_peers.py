"""``AE@host[:port]`` peers, AE titles and UIDs: what the command line and the spool accept, and what they refuse."""

import pytest

from infnet_monai.net.peers import AllowedCaller, Peer, check_ae_title, check_uid, is_uid, normal_address, parse_peer


@pytest.mark.parametrize(
    "text, need_port, expected",
    [
        ("ORTHANC@127.0.0.1:4242", True, Peer("ORTHANC", "127.0.0.1", 4242)),
        ("  PACS 1 @pacs.example.org:104", True, Peer("PACS 1", "pacs.example.org", 104)),
        ("SCANNER@10.0.0.7", False, Peer("SCANNER", "10.0.0.7", None)),
        ("V6@[::1]:11112", True, Peer("V6", "::1", 11112)),
        ("V6@[::1]", False, Peer("V6", "::1", None)),
        ("A@B@host:1", True, Peer("A@B", "host", 1)),  # the last @ separates: AE titles may hold one
    ],
)
def test_peers_parse(text, need_port, expected):
    peer = parse_peer(text, need_port)
    assert peer == expected
    assert parse_peer(str(peer), need_port) == peer  # str() writes what parse_peer reads


@pytest.mark.parametrize(
    "text, need_port, message",
    [
        ("ORTHANC", False, "is not of the form"),
        ("@host:104", True, "is empty"),
        ("ORTHANC@host", True, "has no port"),
        ("ORTHANC@host:0", True, "from 1 to 65535"),
        ("ORTHANC@host:http", True, "from 1 to 65535"),
        ("ORTHANC@::1:104", True, "in brackets"),
        ("THIS_TITLE_IS_TOO_LONG@host:104", True, "longer than 16"),
        ("BACK\\SLASH@host:104", True, "backslash"),
        ("ORTHANC@:104", True, "no valid host"),
    ],
)
def test_malformed_peers_are_refused_with_the_reason(text, need_port, message):
    with pytest.raises(ValueError, match=message):
        parse_peer(text, need_port)


def test_ae_titles():
    assert check_ae_title(" INFNET ") == "INFNET"
    for bad in ("", "   ", "A" * 17, "TAB\tTITLE"):
        with pytest.raises(ValueError):
            check_ae_title(bad)


@pytest.mark.parametrize(
    "uid", ["1.2.840.10008.5.1.4.1.1.2", "2.25.329800735698586629295641978511506172918", "1.2.3\0", "1.02.3", "9"]
)
def test_uids_that_are_safe_path_components_pass(uid):
    assert is_uid(uid)
    assert check_uid(uid, "UID") == uid.rstrip("\0")


@pytest.mark.parametrize(
    "uid",
    ["", None, "..", "../1.2.3", "1.2/../../etc", "1..2", ".1.2", "1.2.", "1.2.3a", "1 2", "/1.2", "1\\2", "1." + "2" * 63],
)
def test_uids_that_could_leave_a_folder_or_are_no_uid_are_refused(uid):
    assert not is_uid(uid)
    with pytest.raises(ValueError, match="is not a valid UID"):
        check_uid(uid, "SeriesInstanceUID")


def test_allowed_callers_match_title_and_address():
    entry = AllowedCaller.resolve(Peer("ORTHANC", "localhost", 4242))
    assert "127.0.0.1" in entry.addresses
    assert entry.matches("ORTHANC", "127.0.0.1") and entry.matches("ORTHANC", "::ffff:127.0.0.1")
    assert not entry.matches("ORTHANC2", "127.0.0.1")
    assert not entry.matches("ORTHANC", "10.1.2.3")
    assert normal_address("::ffff:10.0.0.1") == "10.0.0.1"
    with pytest.raises(ValueError, match="does not resolve"):
        AllowedCaller.resolve(Peer("X", "no-such-host.invalid"))

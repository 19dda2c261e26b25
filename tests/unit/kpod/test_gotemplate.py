"""The Go template subset kpod's --format takes, checked against what Go's text/template prints."""

from __future__ import annotations

import pytest

from crio.kpod.gotemplate import Template, TemplateError, go_string

DATA = {
    "ID": "abc",
    "Names": ["a", "b"],
    "Labels": {"y": "2", "x": "1"},
    "N": 3,
    "B": True,
    "Empty": [],
    "S": {"Inner": "v"},
    "Nil": None,
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{.ID}} {{.Names}}", "abc [a b]"),
        ("{{.Labels}}", "map[x:1 y:2]"),
        ("{{.B}} {{.N}} {{.Nil}}", "true 3 <no value>"),
        ("{{json .S}}|{{json .Names}}", '{"Inner":"v"}|["a","b"]'),
        ("{{.S.Inner | upper}}", "V"),
        ("{{range .Names}}<{{.}}>{{end}}", "<a><b>"),
        ("{{range $i, $v := .Names}}{{$i}}={{$v}} {{end}}", "0=a 1=b "),
        ("{{range $k, $v := .Labels}}{{$k}}={{$v}};{{end}}", "x=1;y=2;"),
        ("{{range .Empty}}x{{else}}none{{end}}", "none"),
        ("{{range .Names}}{{$.ID}}{{end}}", "abcabc"),
        ("{{if .B}}yes{{else}}no{{end}}", "yes"),
        ("{{if .Empty}}yes{{else}}no{{end}}", "no"),
        ("{{if eq .N 2}}two{{else if eq .N 3}}three{{else}}other{{end}}", "three"),
        ("{{if and .B (gt .N 2)}}y{{end}}{{if or .Nil .ID}}z{{end}}", "yz"),
        ("{{with .S}}{{.Inner}}{{end}}{{with .Nil}}x{{else}}w{{end}}", "vw"),
        ('{{join .Names ","}} {{len .Names}} {{index .Labels "x"}}', "a,b 2 1"),
        ('{{printf "%-5s|%5s|%03d|%q" .ID .ID .N .ID}}', 'abc  |  abc|003|"abc"'),
        ("{{$x := .ID}}{{$x}}{{/* a comment */}}", "abc"),
        ("a  {{- .ID -}}  b", "aabcb"),
        ('{{truncate .ID 2}} {{lower "AB"}} {{title "ab cd"}}', "ab ab Ab Cd"),
        ('{{split "a:b" ":"}} {{println .ID}}', "[a b] abc\n"),
    ],
)
def test_renders_like_go(source: str, expected: str) -> None:
    assert Template(source).execute(DATA) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{.Nope}}", "can't evaluate field Nope"),
        ("{{.ID.X}}", "can't evaluate field X"),
        ("{{nofunc .ID}}", 'function "nofunc" not defined'),
        ('{{.ID "a"}}', "can't give argument to non-function"),
        ("{{$y}}", "undefined variable"),
    ],
)
def test_execution_errors_name_the_problem(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        Template(source).execute(DATA)


@pytest.mark.parametrize(
    "source", ["{{if .B}}x", "{{end}}", "{{.ID", '{{"open}}', "{{else}}", "{{(.ID}}", "{{}}"]
)
def test_parse_errors(source: str) -> None:
    with pytest.raises(TemplateError):
        Template(source)


def test_fields_give_table_headers_in_order() -> None:
    assert Template("{{.ID}}\t{{.Names | json}}\t{{.S.Inner}}").fields() == ["ID", "Names", "Inner"]


def test_go_value_printing() -> None:
    assert go_string([1, None, {"a": [True]}]) == "[1 <nil> map[a:[true]]]"
    assert go_string(2.5) == "2.5" and go_string(3.0) == "3"

"""No page loads anything from outside the server: templates and scripts name no external host."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXTERNAL = re.compile(
    r"""(?:src|href|action)\s*=\s*["'](?:https?:)?//(?!127\.0\.0\.1|localhost)""", re.I
)
IMPORTS = re.compile(r"""(?:@import|url\()\s*["']?(?:https?:)?//""", re.I)


def test_templates_and_static_files_reference_only_this_server():
    offenders = []
    files = list((ROOT / "templates").rglob("*.html")) + [
        p
        for p in (ROOT / "static").rglob("*")
        if p.suffix in (".js", ".css", ".html") and "vendor" not in p.parts
    ]
    assert files, "no templates found"
    for path in files:
        text = path.read_text(errors="replace")
        for pattern in (EXTERNAL, IMPORTS):
            for m in pattern.finditer(text):
                offenders.append(f"{path.relative_to(ROOT)}: {text[m.start() : m.start() + 80]}")
    assert offenders == []


def test_vendored_libraries_are_listed_with_versions_and_licences():
    vendor = ROOT / "static" / "vendor"
    listing = (vendor / "README.md").read_text()
    for folder in vendor.iterdir():
        if folder.is_dir():
            assert (folder / "LICENSE").exists(), f"{folder.name} has no licence file"
            name, _, version = folder.name.rpartition("-")
            assert version in listing, f"{folder.name} is not listed in static/vendor/README.md"

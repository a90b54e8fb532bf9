"""nnU-Net v2 raw data sets (``nnUNet_raw/DatasetXXX_Name``).

``dataset.json`` gives ``channel_names`` (``{"0": "CT"}``), ``labels`` as ``name -> id`` (the
reverse of MSD) and ``file_ending``. Images are ``imagesTr/{case}_{XXXX}{file_ending}`` with a
4-digit channel id, labels ``labelsTr/{case}{file_ending}``; ``imagesTs`` is optional.

Label names map to the canonical vocabulary as for MSD (``label_map`` and ``unknown_labels``
options). Region-based label definitions (lists of ids) are not supported. Modality is CT when
every channel is named ``CT`` (nnU-Net's own rule for CT normalisation), MR otherwise; the recipe's
``modality`` overrides. Several channels give a multi-channel case (``channels`` in channel-id
order).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from voxssl.data.adapters.base import (
    Adapter,
    SourceContext,
    UnknownLabelPolicy,
    is_junk,
    label_map_from_names,
    parse_label_map,
    split_channel,
)
from voxssl.data.adapters.msd import modality_of_names, read_dataset_json
from voxssl.data.case import Case
from voxssl.errors import DataError


@dataclass
class NNUNetOptions:
    label_map: dict[int | str, int | str] | None = None  # source id -> organ/background/ignore
    unknown_labels: UnknownLabelPolicy = "error"
    include_test: bool = True


def find_nnunet(ctx: SourceContext, options: NNUNetOptions) -> list[Case]:
    json_path = ctx.root / "dataset.json"
    data = read_dataset_json(json_path)
    names = _label_names(data, json_path)
    explicit = parse_label_map(options.label_map, f"{ctx.where}.options.label_map")
    label_map = label_map_from_names(
        names, explicit, options.unknown_labels, where=ctx.where, dataset_file=json_path
    )
    raw_channels = data.get("channel_names", data.get("modality"))
    if not isinstance(raw_channels, dict) or not raw_channels:
        raise DataError(
            f'{json_path}: \'channel_names\' must map channel ids to names, e.g. {{"0": "CT"}}'
        )
    channel_names = [str(v) for _, v in sorted(raw_channels.items(), key=lambda kv: int(kv[0]))]
    modality = ctx.modality or modality_of_names(channel_names)
    ending = str(data.get("file_ending", ".nii.gz"))
    metadata = {"dataset": ctx.root.name, "channel_names": channel_names}
    splits = [("imagesTr", "labelsTr", "train")] + (
        [("imagesTs", None, "test")] if options.include_test else []
    )
    cases = []
    for image_dir_name, label_dir_name, split in splits:
        image_dir = ctx.root / image_dir_name
        if not image_dir.is_dir():
            if split == "train":
                raise DataError(
                    f"{image_dir}: folder not found (nnU-Net data sets keep their images there)"
                )
            continue
        for case_id, channels in sorted(
            _group_channels(image_dir, ending, len(channel_names)).items()
        ):
            label = ctx.root / label_dir_name / f"{case_id}{ending}" if label_dir_name else None
            has_label = label is not None and label.is_file()
            cases.append(
                Case(
                    case_id=case_id,
                    image=channels[0],
                    modality=modality,
                    label=label if has_label else None,
                    label_map=label_map if has_label else None,
                    channels=tuple(channels) if len(channels) > 1 else (),
                    metadata={**metadata, "split": split},
                )
            )
    return cases


def _label_names(data: dict, json_path: Path) -> dict[int, str]:
    labels = data.get("labels")
    if not isinstance(labels, dict):
        raise DataError(f"{json_path}: 'labels' must map names to ids (nnU-Net v2 format)")
    names = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise DataError(
                f"{json_path}: label {name!r} is region-based ({value}); voxssl needs one id per label"
            )
        try:
            names[int(value)] = str(name)
        except (TypeError, ValueError):
            raise DataError(
                f"{json_path}: label {name!r} has a non-integer id {value!r} "
                "(labels are name -> id in nnU-Net v2; is this an MSD dataset.json?)"
            ) from None
    return names


def _group_channels(image_dir: Path, ending: str, n_channels: int) -> dict[str, list[Path]]:
    """``case_0000``, ``case_0001`` ... -> {case: [channel 0, channel 1, ...]}, checked complete."""
    grouped: dict[str, dict[int, Path]] = defaultdict(dict)
    for path in sorted(image_dir.iterdir()):
        if is_junk(path) or not path.name.endswith(ending):
            continue
        case_id, channel = split_channel(path.name[: -len(ending)])
        if channel is None or not case_id:
            raise DataError(f"{path}: nnU-Net image names end in _XXXX{ending} (the channel id)")
        grouped[case_id][channel] = path
    result = {}
    for case_id, channels in grouped.items():
        if sorted(channels) != list(range(n_channels)):
            raise DataError(
                f"{image_dir}: case {case_id!r} has channels {sorted(channels)}, dataset.json names {n_channels}"
            )
        result[case_id] = [channels[i] for i in range(n_channels)]
    return result


ADAPTER = Adapter(
    name="nnunet",
    options=NNUNetOptions,
    find=find_nnunet,
    description="nnU-Net v2 raw data set (dataset.json, imagesTr/{case}_0000, labelsTr, imagesTs)",
)

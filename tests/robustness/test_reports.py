"""What evaluate and plot report must not mislead: classes without images, the data they use."""

from __future__ import annotations

import numpy as np

from stablecnn import cli


def test_a_class_without_test_images_is_not_reported_as_wrong(epoch1_template, kit, monkeypatch,
                                                                 capsys):
    import stablecnn.commands
    from stablecnn.metrics import Evaluation

    images, labels = kit.make_data(40, 3)
    keep = labels != 3  # no image of class 3; class 5 kept, whatever its accuracy
    monkeypatch.setattr(stablecnn.commands, "load_data",
                        lambda *a, **k: [(images[keep], labels[keep])])
    assert cli.main(["evaluate", str(epoch1_template)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines()
                if x.startswith("per-class accuracy"))
    assert "3: n/a" in line
    assert "n/a" not in line.replace("3: n/a", "")
    confusion = np.zeros((3, 3), np.int64)
    confusion[0, 0], confusion[2, 1] = 4, 2  # class 1: no examples; class 2: all wrong
    per_class = Evaluation(0.5, 1.0, np.zeros(6), confusion).per_class_accuracy
    assert per_class[0] == 1.0 and np.isnan(per_class[1]) and per_class[2] == 0.0

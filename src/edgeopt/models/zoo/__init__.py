"""Built-in architectures, registered by name and built from ``zoo:NAME?width=&classes=&input=``.

Each family lives in its own file and registers its builders with
:func:`edgeopt.registry.register_model`. A builder takes keyword arguments ``width`` (channel
multiplier, above 0), ``classes`` and ``input_shape`` (C, H, W, a spectrogram being 1 x frames x
coefficients, or one flat length for a fully connected input) and returns an ``nn.Module``.
"""

from __future__ import annotations

from edgeopt.models.zoo import autoencoder as _autoencoder  # noqa: F401  (registers builders)
from edgeopt.models.zoo import cnn as _cnn  # noqa: F401
from edgeopt.models.zoo import dscnn as _dscnn  # noqa: F401
from edgeopt.models.zoo import lenet as _lenet  # noqa: F401
from edgeopt.models.zoo import mobilenet as _mobilenet  # noqa: F401
from edgeopt.models.zoo import resnet as _resnet  # noqa: F401
from edgeopt.models.zoo import shufflenet as _shufflenet  # noqa: F401
from edgeopt.models.zoo import squeezenet as _squeezenet  # noqa: F401
from edgeopt.models.zoo.common import ZooInfo
from edgeopt.models.zoo.common import build_zoo_model
from edgeopt.models.zoo.common import zoo_info

__all__ = ["ZooInfo", "build_zoo_model", "zoo_info"]

"""A flood of valid feature batches, for the system tests of the cloud's sharing (imported; not a test module)."""

import math
import time

from hiertrain_interfaces.msg import FeatureBatch

from hiertrain_ros.core import codec
from hiertrain_ros.core.config import CloudConfig

FLOOD_SEQS = range(10**9, 10**9 + 300)  # an edge numbers its batches from its start time in µs: no clash


def flood_cloud(publisher, real: FeatureBatch) -> tuple[float, float]:
    """Publish 300 valid training batches of the largest size the cloud takes, 20/s, as robot "flooder".

    Far more than the cloud can train.  ``real`` is a robot's training batch (model, split, bits).  Returns the
    flood's (start, end) on ``time.monotonic()``.
    """
    n, shape = CloudConfig.max_batch_samples, list(real.shape)
    flood = FeatureBatch(model_hash=real.model_hash, encoder_version=real.encoder_version,
                         robot_id="flooder", purpose=FeatureBatch.PURPOSE_TRAIN, split_point=real.split_point,
                         bits=real.bits, scale=1.0, shape=[n, *shape[1:]], labels=[0] * n,
                         data=bytes(codec.packed_size(n * math.prod(shape[1:]), real.bits)))
    start = time.monotonic()
    for seq in FLOOD_SEQS:
        flood.seq = seq
        publisher.publish(flood)
        time.sleep(0.05)
    return start, time.monotonic()

"""CLI of the synthetic demo corpus (the renderer is lipsync_jax.data.synthetic).

python -m data_pipelines.synthetic --out data/demo --clips 60 --seed 0
"""

from lipsync_jax.data import synthetic

if __name__ == "__main__":
  synthetic.main()

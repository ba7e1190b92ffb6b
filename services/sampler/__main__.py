from services.common.runtime import serve
from services.sampler.app import SamplerSettings, build_app

settings = SamplerSettings()
serve(build_app(settings), settings)

from services.common.runtime import serve
from services.mapper.app import MapperSettings, build_app

settings = MapperSettings()
serve(build_app(settings), settings)

from services.common.runtime import serve
from services.extractor.app import ExtractorSettings, build_app

settings = ExtractorSettings()
serve(build_app(settings), settings)

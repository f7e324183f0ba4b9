from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Researcher and above (SPECTACULAR_SETTINGS["SERVE_PERMISSIONS"]): ?format=json for JSON.
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("ratings.urls")),
    path("", include("reward.urls")),
    path("", include("reward.urls_evaluation")),
]

handler404 = "ratings.views.not_found"
handler500 = "ratings.views.server_error"

from django.urls import path

from . import views

urlpatterns = [
    path("api/review/today/", views.review_today),
    path("api/users/<int:pk>/", views.user),
    path("api/boom/", views.boom),
    path("api/stream/", views.stream),
    path("health", views.health),
]

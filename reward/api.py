"""Reward models over the API: researchers read them (with live curves), admins start and
cancel them. Used by the detail page to redraw its curves while a job runs."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ratings.dataset import DataFilters
from ratings.permissions import IsAdmin, IsResearcher
from reward import selectors, training
from reward.models import FineTuneRun, RewardModel


class RewardModelSerializer(serializers.ModelSerializer):
    headline = serializers.SerializerMethodField()
    usable = serializers.BooleanField(read_only=True)
    percent_done = serializers.FloatField(read_only=True)

    class Meta:
        model = RewardModel
        fields = [
            "id", "name", "kind", "method", "status", "phase", "steps", "step", "percent_done",
            "curve", "metrics", "headline", "usable", "data_filters", "data_summary", "config",
            "error", "attempts", "resumed_from_steps", "created_at", "started_at",
            "finished_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_headline(self, reward_model: RewardModel) -> dict | None:
        return selectors.headline(reward_model)


class RewardModelCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=RewardModel.Kind.choices)
    method = serializers.ChoiceField(choices=RewardModel.Method.choices, default="learned")
    steps = serializers.IntegerField(min_value=1, max_value=1_000_000)
    campaign_ids = serializers.ListField(child=serializers.IntegerField(), default=list)
    protocols = serializers.ListField(child=serializers.CharField(), default=list)
    since = serializers.DateTimeField(required=False, allow_null=True, default=None)
    until = serializers.DateTimeField(required=False, allow_null=True, default=None)
    min_rater_reliability = serializers.FloatField(
        min_value=0, max_value=1, required=False, allow_null=True, default=None
    )
    min_gold_accuracy = serializers.FloatField(
        min_value=0, max_value=1, required=False, allow_null=True, default=None
    )
    settings = serializers.DictField(default=dict)


class RewardModelListView(APIView):
    """GET: every reward model (researcher and above). POST: start one (admin)."""

    def get_permissions(self) -> list:
        return [IsAdmin()] if self.request.method == "POST" else [IsResearcher()]

    @extend_schema(operation_id="reward_models_list", responses=RewardModelSerializer(many=True))
    def get(self, request: Request) -> Response:
        models = RewardModel.objects.order_by("-created_at")
        return Response(RewardModelSerializer(models, many=True).data)

    @extend_schema(
        operation_id="reward_models_create",
        request=RewardModelCreateSerializer,
        responses={201: RewardModelSerializer},
    )
    def post(self, request: Request) -> Response:
        body = RewardModelCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        filters = DataFilters(
            campaign_ids=tuple(data["campaign_ids"]),
            protocols=tuple(data["protocols"]),
            since=data["since"],
            until=data["until"],
            min_rater_reliability=data["min_rater_reliability"],
            min_gold_accuracy=data["min_gold_accuracy"],
        )
        try:
            reward_model = training.reward_model_create(
                name=data["name"], kind=data["kind"], method=data["method"],
                steps=data["steps"], filters=filters, settings=data["settings"],
                created_by=request.user,
            )  # fmt: skip
        except training.RewardModelError as error:
            return Response(
                {"error": "invalid", "detail": str(error)}, status=status.HTTP_400_BAD_REQUEST
            )
        return Response(RewardModelSerializer(reward_model).data, status=status.HTTP_201_CREATED)


class RewardModelDetailView(APIView):
    """GET one reward model with its curve and metrics (researcher and above)."""

    permission_classes = [IsResearcher]

    @extend_schema(operation_id="reward_models_retrieve", responses=RewardModelSerializer)
    def get(self, request: Request, reward_model_id: int) -> Response:
        reward_model = get_object_or_404(RewardModel, pk=reward_model_id)
        return Response(RewardModelSerializer(reward_model).data)


class RewardModelCancelView(APIView):
    """POST: cancel a queued or running job (admin)."""

    permission_classes = [IsAdmin]

    @extend_schema(request=None, responses=RewardModelSerializer)
    def post(self, request: Request, reward_model_id: int) -> Response:
        reward_model = get_object_or_404(RewardModel, pk=reward_model_id)
        training.reward_model_cancel(reward_model=reward_model)
        return Response(RewardModelSerializer(reward_model).data)


class FineTuneRunSerializer(serializers.ModelSerializer):
    percent_done = serializers.FloatField(read_only=True)
    result_version = serializers.SlugRelatedField(slug_field="name", read_only=True)
    base_version = serializers.SlugRelatedField(slug_field="name", read_only=True)

    class Meta:
        model = FineTuneRun
        fields = [
            "id", "name", "base_version", "algorithm", "preset", "stages", "stage", "status",
            "phase", "steps", "step", "percent_done", "curve", "metrics", "warnings", "samples",
            "settings", "result_version", "error", "attempts", "resumed_from_steps",
            "created_at", "started_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


class FineTuneRunDetailView(APIView):
    """GET one fine-tuning run with its curves (researcher and above)."""

    permission_classes = [IsResearcher]

    @extend_schema(responses=FineTuneRunSerializer)
    def get(self, request: Request, run_id: int) -> Response:
        run = get_object_or_404(FineTuneRun, pk=run_id)
        return Response(FineTuneRunSerializer(run).data)

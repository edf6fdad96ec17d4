from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from runner.library import templates
from runner.models import Run


@login_required
def home(request):
    runs = Run.objects.filter(owner=request.user)[:20]
    return render(request, "designer/home.html", {"runs": runs, "templates": templates()})

#!/usr/bin/env bash
# Issue 21 items 1 and 2, run by .ci/run after the Release build of Kernels.sln (it packs with --no-build):
#   1. `dotnet pack` every packable project into artifacts/packages (the local feed) and check the packages
#      (.ci/check-packages.cs: symbols, README, repository commit, XML docs, the embedded .cu sources, the tool's model,
#      and no TorchSharp dependency anywhere);
#   2. build samples/Consumer against those packages (samples/nuget.config) and run it: a file missing from a package
#      fails here;
#   3. install the rellax tool from the feed into a temporary folder outside the repository and run `rellax demo --fast`
#      from it (so the model must come from the package, not from the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
feed=artifacts/packages
version=$(sed -n 's:.*<RellaxVersion>\(.*\)</RellaxVersion>.*:\1:p' eng/Version.props)
[ -n "$version" ] || { echo "packages: no <RellaxVersion> in eng/Version.props" >&2; exit 1; }

start=$SECONDS
rm -rf "$feed"
dotnet pack Kernels.sln -c Release --no-build -nologo -v minimal
dotnet run .ci/check-packages.cs -- "$feed" "$version"
echo "packages: packed and checked in $((SECONDS - start)) s"

# The samples restore into their own packages folder (samples/nuget.config); forget any Rellax package restored
# there before, so this run's packages are the ones used even though the version did not change.
rm -rf artifacts/sample-packages/rellax.* samples/Consumer/obj samples/Consumer/bin
dotnet build samples/Consumer/Consumer.sln -c Release -nologo -v minimal
dotnet samples/Consumer/bin/Release/net10.0/Consumer.dll
echo "packages: consumer built and run from the packages in $((SECONDS - start)) s"

tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
dotnet tool install --tool-path "$tools" --add-source "$feed" rellax --version "$version"
(cd "$tools" && timeout 300 ./rellax demo --fast)
echo "packages: OK in $((SECONDS - start)) s (pack, check, consumer, tool install and demo)"

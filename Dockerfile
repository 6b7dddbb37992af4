# syncbouncer in a container: Debian 12 slim, the binary from the Debian package built from this
# tree, running as the unprivileged user the package creates.
#   docker build -t syncbouncer .
#   docker run -v $PWD/my.ini:/etc/syncbouncer/syncbouncer.ini -p 6432:6432 syncbouncer
FROM debian:12 AS build
RUN apt-get update \
	&& apt-get install -y --no-install-recommends build-essential debhelper pkg-config \
		autoconf automake libtool libevent-dev libssl-dev libc-ares-dev \
		libcurl4-openssl-dev libyajl-dev libpq-dev libpg-query-dev \
	&& rm -rf /var/lib/apt/lists/*
COPY . /src/syncbouncer
WORKDIR /src/syncbouncer
RUN DEB_BUILD_OPTIONS="nocheck parallel=2" dpkg-buildpackage -us -uc -b

FROM debian:12-slim
COPY --from=build /src/syncbouncer_*.deb /tmp/
RUN apt-get update \
	&& apt-get install -y --no-install-recommends /tmp/syncbouncer_*.deb \
	&& rm -rf /var/lib/apt/lists/* /tmp/syncbouncer_*.deb \
	&& install -d -o syncbouncer -g syncbouncer /run/syncbouncer /var/lib/syncbouncer \
	&& sed -i -e 's/^listen_addr = .*/listen_addr = */' -e 's/^logfile = .*/logfile =/' \
		/etc/syncbouncer/syncbouncer.ini
USER syncbouncer
EXPOSE 6432 9127
CMD ["syncbouncer", "/etc/syncbouncer/syncbouncer.ini"]

#!/usr/bin/env python3
"""Writes the two synthetic Naver-blog-style pages of data/extract_layouts/ko-blog-naver/.

No licensed Naver blog page could be found (Naver's terms do not allow redistributing saved
pages, and no public repository ships one under a licence), so these two pages reproduce the
*markup* of the two layouts a crawl of blog.naver.com returns - the PostView page of
SmartEditor ONE (div.se-main-container > se-component se-text > p.se-text-paragraph, the
documentTitle header, sympathy/comment bars, u_cbox comments, category and popular-post
widgets) and of the older SmartEditor 2 (the whole page laid out in <table> cells, the post in
div#postViewArea as <p><span style=...> paragraphs separated by <p>&nbsp;</p>) - around Korean
text written for aji (this repository's licence). They test structure, not Naver's wording:
real pages vary more. The frameset page blog.naver.com/<id>/<logNo> itself holds only an
<iframe> (no text for trafilatura or aji) and is not included.

    python3 bench/extract_layouts/naver_style_pages.py OUT_DIR
"""
import gzip
import html
import os
import sys


def se_one_page():
    title = "주말에 집에서 통밀빵 굽기: 반죽부터 굽기까지 처음 해 본 기록"
    paras = [
        "지난 주말에는 처음으로 집에서 통밀빵을 구워 보았습니다. 빵집에서 사 먹는 빵도 맛있지만, 재료를 직접 고르고 반죽이 부풀어 오르는 모습을 보는 재미가 있다는 이야기를 자주 들어서 한번 도전해 보기로 했어요.",
        "준비한 재료는 통밀가루 300그램, 강력분 200그램, 미지근한 물 350밀리리터, 인스턴트 이스트 5그램, 소금 9그램, 꿀 한 큰술이었습니다. 통밀가루는 물을 많이 먹기 때문에 일반 식빵 반죽보다 수분을 조금 더 넉넉하게 잡는 것이 좋다고 합니다.",
        "먼저 물에 꿀을 풀고 이스트를 넣어 오 분 정도 두었다가, 가루 재료와 소금을 섞은 볼에 부어 주걱으로 대충 뭉쳤습니다. 처음에는 반죽이 손에 너무 달라붙어서 당황했는데, 십 분쯤 쉬게 한 뒤에 다시 치대니 훨씬 매끄러워졌어요. 이렇게 잠깐 쉬게 하는 과정을 오토리즈라고 부른다는 것도 이번에 알게 되었습니다.",
        "1차 발효는 따뜻한 오븐 안에서 한 시간 정도 했습니다. 반죽이 두 배 가까이 부풀었을 때 손가락에 밀가루를 묻혀 가운데를 찔러 보았더니 구멍이 천천히 메워져서 발효가 잘 된 것을 확인할 수 있었어요. 가스를 가볍게 빼고 둥글게 모양을 잡은 다음, 면포를 깐 바구니에 넣어 2차 발효를 사십 분 더 했습니다.",
        "오븐은 230도로 충분히 예열하고, 무쇠 냄비를 함께 넣어 달궈 두었습니다. 반죽 윗면에 칼집을 한 줄 길게 내고 뚜껑을 덮어 이십 분, 뚜껑을 열고 온도를 210도로 낮춰 이십오 분을 더 구웠더니 겉이 바삭하고 진한 갈색이 되었어요. 냄비 안에서 나온 수증기 덕분에 빵이 옆으로 퍼지지 않고 위로 잘 솟아올랐습니다.",
        "가장 참기 힘들었던 것은 식히는 시간이었습니다. 갓 구운 빵을 바로 자르면 속이 떡처럼 눌린다고 해서 식힘망 위에서 한 시간을 꼬박 기다렸어요. 잘라 보니 기공이 생각보다 고르게 생겼고, 고소한 통밀 향이 집 안 가득 퍼졌습니다.",
        "다음에는 물의 양을 조금 줄이고 호두와 건포도를 넣어 볼 생각입니다. 처음 빵을 굽는 분들이라면 계량을 정확하게 하고, 발효 시간보다는 반죽의 상태를 보고 판단하는 것이 가장 중요하다는 점을 꼭 기억하셨으면 좋겠어요.",
    ]

    def se_text(ps):
        out = [f'<p class="se-text-paragraph se-text-paragraph-align-" id="SE-p{i:04d}" style=""><span class="se-fs- se-ff-" '
               f'id="SE-s{i:04d}" style="">{html.escape(p)}</span></p>' for i, p in enumerate(ps)]
        return ('<div class="se-component se-text se-l-default" id="SE-t%04d"><div class="se-component-content">'
                '<div class="se-section se-section-text se-l-default"><div class="se-module se-module-text">'
                '<!-- SE-TEXT { -->%s<!-- } SE-TEXT --></div></div></div></div>') % (len(ps), "".join(out))

    def se_image(n, cap):
        return (f'<div class="se-component se-image se-l-default" id="SE-img{n}"><div class="se-component-content se-component-content-fit">'
                f'<div class="se-section se-section-image se-l-default se-section-align-"><div class="se-module se-module-image" style="">'
                f'<a class="se-module-image-link __se_image_link __se_link" data-linktype="img" onclick="return false;" href="#"><img src="https://postfiles.example/bread{n}.jpg?type=w773" alt="" class="se-image-resource egjs-visible" /></a></div>'
                f'<div class="se-module se-module-text se-caption"><p class="se-text-paragraph se-text-paragraph-align-center"><span class="se-fs- se-ff-">{html.escape(cap)}</span></p></div></div></div></div>')

    cats = ["전체보기 (128)", "일상 기록 (41)", "베이킹 (23)", "여행 (19)", "책 이야기 (17)", "요리 노트 (28)"]
    cat_html = "".join(f'<li><a href="/PostList.naver?blogId=breadlog&amp;categoryNo={i}" class="itemfont _doNclick" title="{html.escape(c)}">{html.escape(c)}</a></li>' for i, c in enumerate(cats))
    popular = ["초보도 실패 없는 바나나 머핀", "제주 동쪽 해안도로 자전거 여행", "요즘 읽은 에세이 세 권", "냉장고 정리하면서 만든 볶음밥", "겨울 대비 베란다 화분 옮기기"]
    pop_html = "".join(f'<li class="item"><a href="/PostView.naver?blogId=breadlog&amp;logNo={223000000000 + i}" class="link"><strong class="title ell">{html.escape(t)}</strong><span class="date">2024. 10. {i + 3}.</span></a></li>' for i, t in enumerate(popular))
    comments = [("하늘빛", "와 처음 구우신 거 맞나요? 기공이 정말 예쁘네요!"), ("소금빵러버", "무쇠 냄비 팁 좋네요. 저도 이번 주에 해 볼게요."), ("브레드메이트", "식히는 시간 참기 진짜 어렵죠 ㅎㅎ 잘 보고 갑니다.")]
    cm_html = "".join(f'<li class="u_cbox_comment"><div class="u_cbox_comment_box"><div class="u_cbox_area"><div class="u_cbox_info"><span class="u_cbox_nick">{html.escape(n)}</span></div><div class="u_cbox_text_wrap"><span class="u_cbox_contents">{html.escape(c)}</span></div><div class="u_cbox_info_base"><span class="u_cbox_date">2024. 11. 4. 21:1{i}</span><a href="#" class="u_cbox_btn_reply">답글</a></div></div></div></li>' for i, (n, c) in enumerate(comments))
    body = se_text(paras[:2]) + se_image(1, "준비한 재료들") + se_text(paras[2:4]) + se_image(2, "2차 발효를 마친 반죽") + se_text(paras[4:])
    return f'''<!DOCTYPE html>
<html lang="ko"><head><meta charset="UTF-8"><title>{html.escape(title)} : 네이버 블로그</title>
<meta property="og:title" content="{html.escape(title)}"/><meta property="og:site_name" content="네이버 블로그 | 빵 굽는 일상"/>
<link rel="stylesheet" type="text/css" href="https://blogimgs.example/css/post.css"/>
<script type="text/javascript">var blogId = 'breadlog'; var logNo = '223640000001'; var isSmartEditorOne = true;</script></head>
<body class="se_body_wrap">
<div id="whole-border"><div id="whole-body">
<div id="blog-gnb"><div class="gnb_inner"><a href="https://www.naver.com" class="link_naver">NAVER</a> <a href="https://section.blog.naver.com" class="link_blog">블로그</a>
<a href="#" class="btn_my">내소식</a> <a href="#" class="btn_my">이웃블로그</a> <a href="#" class="btn_my">블로그 홈</a> <a href="#" class="btn_login">로그인</a></div></div>
<div id="blog-title"><h1><a href="/breadlog" class="title">빵 굽는 일상</a></h1><p class="desc">작은 부엌에서 굽고, 먹고, 기록합니다</p></div>
<div id="blog-menu"><ul><li><a href="/PostList.naver?blogId=breadlog">블로그</a></li><li><a href="/prologue">프롤로그</a></li><li><a href="/guestbook">안부</a></li><li><a href="/memo">메모</a></li></ul></div>
<div id="body">
<div id="sidebar">
<div id="profile" class="widget"><div class="nick">빵굽는곰</div><p class="caption">주말마다 빵과 과자를 굽는 평범한 직장인입니다.</p><a href="#" class="btn_addbuddy">이웃추가</a></div>
<div id="category-list" class="widget"><h2 class="title">카테고리</h2><ul>{cat_html}</ul></div>
<div id="popular" class="widget"><h2 class="title">이 블로그 인기글</h2><ul>{pop_html}</ul></div>
<div id="tag-widget" class="widget"><h2 class="title">태그</h2><a href="#">#통밀빵</a> <a href="#">#홈베이킹</a> <a href="#">#무쇠냄비</a> <a href="#">#주말</a></div>
<div id="visitor" class="widget">오늘 <strong>132</strong> 전체 <strong>98,451</strong></div>
</div>
<div id="post-area"><div id="postListBody"><div class="post _post_wrap _param(1)">
<div class="wrap_rabbit pcol2 _param(1) _postViewArea223640000001" id="post-view223640000001">
<!-- Rabbit HTML --><div class="se-viewer se-theme-default" lang="ko-KR">
<!-- SE_DOC_HEADER_START -->
<div class="se-component se-documentTitle se-l-default" id="SE-title"><div class="se-component-content"><div class="se-section se-section-documentTitle se-l-default se-section-align-left">
<div class="blog2_series"><a class="pcol2" href="/PostList.naver?blogId=breadlog&amp;categoryNo=2">베이킹</a></div>
<div class="pcol1"><div class="se-module se-module-text se-title-text"><p class="se-text-paragraph se-text-paragraph-align-"><span class="se-fs- se-ff-">{html.escape(title)}</span></p></div></div>
<div class="blog2_container"><span class="writer"><span class="nick"><a class="link pcol2" href="/breadlog">빵굽는곰</a></span></span><i class="dot"> ・ </i><span class="se_publishDate pcol2">2024. 11. 3. 18:42</span></div>
<div class="blog2_post_function"><a class="url pcol2 _setClipboard" href="#">URL 복사</a> <a class="btn_buddy pcol2" href="#">이웃추가</a>
<div class="overflow_menu"><a class="btn_overflow_menu" href="#" role="button"><span class="blind">본문 기타 기능</span></a><div class="lyr_overflow_menu"><a href="#" class="naver-splugin">공유하기</a><a class="_report" href="#">신고하기</a></div></div></div>
</div></div></div>
<!-- SE_DOC_HEADER_END -->
<div class="se-main-container">
{body}
</div></div>
</div>
<div class="wrap_postcomment"><div class="area_sympathy"><a href="#" class="u_likeit_list_btn"><span class="u_likeit_icon">공감</span> <em class="u_cnt">27</em></a></div>
<div class="area_comment"><a href="#" class="btn_comment">댓글 <em>3</em></a></div>
<div class="area_share"><a href="#">공유하기</a></div></div>
<div id="naverComment_223640000001" class="u_cbox"><div class="u_cbox_wrap"><div class="u_cbox_head"><h5 class="u_cbox_title">댓글</h5><span class="u_cbox_count">3</span></div>
<ul class="u_cbox_list">{cm_html}</ul>
<div class="u_cbox_write_wrap"><textarea class="u_cbox_text" title="댓글 입력" placeholder="주제와 무관한 댓글, 악플은 삭제될 수 있습니다."></textarea><button class="u_cbox_btn_upload">등록</button></div></div></div>
</div></div></div>
<div id="post-list-bottom"><h3>베이킹 카테고리의 다른 글</h3><ul><li><a href="#">버터 없이 만드는 스콘</a></li><li><a href="#">발효종 키우기 3일차</a></li><li><a href="#">호밀빵과 통밀빵의 차이</a></li></ul></div>
</div>
<div id="footer"><p>이 블로그의 글은 작성자의 허락 없이 무단 전재할 수 없습니다.</p><p><a href="#">이용약관</a> <a href="#">개인정보처리방침</a> <a href="#">고객센터</a> ⓒ NAVER Corp.</p></div>
</div></div>
<script type="text/javascript">window.addEventListener('load', function() {{ if (window.parent !== window) {{ /* framed by blog.naver.com */ }} }});</script>
</body></html>
'''


def se2_page():
    title = "늦가을 경주 여행 이틀 코스 정리 (대릉원, 황리단길, 불국사)"
    paras = [
        "회사에 연차를 하루 붙여서 부모님과 함께 경주에 다녀왔습니다. 여러 번 가 본 곳이지만 늦가을에는 처음이라 단풍이 얼마나 남아 있을지 궁금했는데, 다행히 은행나무와 단풍이 한창이었어요.",
        "첫째 날에는 오전에 서울역에서 출발해 신경주역에 도착한 뒤 버스를 타고 시내로 들어갔습니다. 점심은 황리단길 근처의 작은 한식집에서 쌈밥 정식을 먹었는데, 반찬이 정갈하고 양도 넉넉해서 부모님께서 무척 좋아하셨어요.",
        "식사 후에는 대릉원을 천천히 걸었습니다. 커다란 고분 사이로 난 길을 따라 걷다 보면 도시 한가운데라는 사실을 잊게 됩니다. 천마총 내부도 관람했는데, 출토된 유물의 복제품과 무덤의 구조를 설명한 전시가 알기 쉽게 잘 정리되어 있었어요.",
        "저녁에는 동궁과 월지의 야경을 보러 갔습니다. 해가 지고 조명이 켜지면 연못에 전각이 그대로 비치는데, 사진으로 보던 것보다 훨씬 아름다웠어요. 다만 주말 저녁에는 사람이 많아서 입장하는 데 이십 분 정도 줄을 서야 했습니다.",
        "둘째 날 아침에는 불국사에 들렀습니다. 청운교와 백운교 옆으로 붉게 물든 단풍이 정말 멋졌고, 다보탑과 석가탑을 나란히 보면서 부모님께서 예전 수학여행 이야기를 들려주셨어요. 오후에는 석굴암까지 셔틀버스로 올라갔다가 내려와서 경주빵을 사 들고 기차를 탔습니다.",
        "이틀 동안 걸은 거리가 이만 보가 넘었지만 일정이 빡빡하지 않아서 부모님과 함께하기에 딱 좋았습니다. 늦가을 경주를 계획하신다면 편한 신발과 얇은 겉옷을 꼭 챙기시고, 동궁과 월지는 평일 저녁에 가시는 것을 추천드려요.",
    ]

    def p(t):
        return (f'<p style="line-height: 1.8;"><span style="font-family: 나눔고딕, NanumGothic, sans-serif; font-size: 11pt;">'
                f'{html.escape(t)}</span></p><p>&nbsp;</p>')

    body = ("".join(p(t) for t in paras[:3]) +
            '<p style="text-align: center;"><img src="https://postfiles.example/gyeongju1.jpg" class="_photoImage" width="740" /></p><p>&nbsp;</p>' +
            "".join(p(t) for t in paras[3:]))
    cats = ["전체보기 (312)", "국내 여행 (88)", "해외 여행 (35)", "맛집 (102)", "가족 (41)", "잡담 (46)"]
    cat_html = "".join(f'<li><a href="/PostList.naver?blogId=tripnote&amp;categoryNo={i}" class="itemfont">{html.escape(c)}</a></li>' for i, c in enumerate(cats))
    recent = ["부산 영도 흰여울마을 산책", "강릉 커피거리 카페 세 곳", "전주 한옥마을 당일치기", "여수 밤바다 유람선 후기"]
    rec_html = "".join(f'<tr><td class="title"><a href="/PostView.naver?blogId=tripnote&amp;logNo={221000000000 + i}">{html.escape(t)}</a></td><td class="date">2019. 11. {i + 1}.</td></tr>' for i, t in enumerate(recent))
    return f'''<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" lang="ko"><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8" />
<title>{html.escape(title)} : 네이버 블로그</title>
<script type="text/javascript">var gsBlogId = "tripnote"; var gnLogNo = "221700000001"; var editorVersion = "2";</script></head>
<body><div id="wrapper">
<div id="head-skin"><div id="blog-title"><a href="/tripnote">여행하는 노트</a></div><div id="blog-menu"><a href="#">블로그</a> | <a href="#">지도</a> | <a href="#">서재</a> | <a href="#">안부</a></div></div>
<table id="body-table" cellpadding="0" cellspacing="0"><tr>
<td id="sidebar-left" valign="top">
<div class="profile"><span class="nick">길 위의 노트</span><p>주말마다 가까운 곳을 걷고 기록합니다.</p><a href="#">이웃추가</a></div>
<div class="category"><h3>카테고리</h3><ul>{cat_html}</ul></div>
<div class="calendar"><h3>2019년 11월</h3><table><tr><td>1</td><td>2</td><td>3</td><td>4</td><td>5</td><td>6</td><td>7</td></tr></table></div>
</td>
<td id="content-area" valign="top">
<div id="postListBody">
<table class="post-top" width="100%"><tr><td class="pcol1"><span class="pcol1 itemSubjectBoldfont">{html.escape(title)}</span></td></tr>
<tr><td class="date fil5 pcol2 _postAddDate">2019. 11. 17. 22:05</td><td class="category"><a href="#" class="pcol2">국내 여행</a></td></tr></table>
<div id="postViewArea"><div class="post-view pcol2 _param(1) _postViewArea221700000001" id="post-view221700000001">
{body}
</div></div>
<div class="post_footer_contents"><div class="post-btn"><a href="#" class="btn_sympathy">공감 <em>15</em></a> <a href="#" class="btn_comment">댓글 <em>4</em></a> <a href="#" class="btn_scrap">스크랩</a> <a href="#">인쇄</a></div>
<div class="post_tag"><a href="#">경주여행</a> <a href="#">불국사</a> <a href="#">동궁과월지</a></div></div>
<div class="comment_area"><ul><li><strong>바람소리</strong> 부모님과 다녀오셨다니 부럽네요. 코스 참고할게요! <span>2019.11.18 09:12</span> <a href="#">답글</a></li>
<li><strong>여행자</strong> 동궁과 월지 야경 정말 예쁘죠. <span>2019.11.18 13:40</span> <a href="#">답글</a></li></ul>
<div class="comment_write"><textarea title="댓글쓰기"></textarea><a href="#">등록</a></div></div>
<div class="post-list-bottom"><h4>'국내 여행' 카테고리의 다른 글</h4><table>{rec_html}</table></div>
</div></td></tr></table>
<div id="footer">이 블로그의 모든 글의 저작권은 작성자에게 있습니다. <a href="#">블로그 고객센터</a> <a href="#">이용약관</a> ⓒ NAVER Corp.</div>
</div></body></html>
'''


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "data/extract_layouts/ko-blog-naver"
    os.makedirs(out, exist_ok=True)
    for name, page in (("synthetic_naver_se_one_postview", se_one_page()), ("synthetic_naver_se2_postview", se2_page())):
        with open(os.path.join(out, name + ".html.gz"), "wb") as f:
            f.write(gzip.compress(page.encode("utf-8"), mtime=0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
